"""The Orchestrator: owns the cards, the plan, the model manager and the tools. Sessions share it."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from foundation_models.family import Family
from foundation_models.fastpath import FastPath

from .batching import Batcher
from .brain import Brain, BrainConfig, brain_from
from .brain.footprint import keep_free_for_brain
from .cards import CardSet, ModelCard, load_cards
from .devices import Device, devices_for
from .errors import KnowledgeError, SpecError
from .images import ImageLimits
from .knowledge import ManagedEmbedder, Shelf
from .manager import ModelManager
from .placement import Plan, make_plan
from .remote import RemoteTools
from .session import Session
from .settings import Settings, WeightsMode
from .spec import LoadItem, parse_budgets, parse_load_spec
from .toolbox import all_tools
from .tools import Tool
from .weights import WeightResolver

log = logging.getLogger(__name__)

DEFAULT_LOAD = "ImageCaptioning_auto,Text2Image_auto"


class Orchestrator:
    """Plans placement at construction (nothing loads); models load on first use by any session.

    ``Orchestrator("Text2Image_cuda:0", weights="tiny", brain="rules")`` is the simple way in. Everything about
    how it runs is one frozen :class:`Settings` (``settings=``; by default read from the environment once, here);
    ``weights``, ``model_dir`` and ``session_root`` override its fields. ``brain_options`` are other
    ``BrainConfig`` fields (``model``, ``quant``, ``max_steps``, ...). ``devices``, ``cards`` and ``families``
    replace the detected devices, the registry and the family modules (tests). ``remote`` runs the tools of the
    cards it serves elsewhere (``orchestrator.cluster``: Ray Serve replicas); they are not placed here.
    """

    def __init__(
        self,
        load: str | Sequence[LoadItem] = DEFAULT_LOAD,
        *,
        settings: Settings | None = None,
        weights: WeightsMode | None = None,
        model_dir: str | Path | None = None,
        session_root: str | Path | None = None,
        max_vram: str | list[str] | Mapping[str, int] | None = None,
        brain: str | BrainConfig | Brain | None = None,
        brain_options: Mapping[str, Any] | None = None,
        image_limits: ImageLimits | None = None,
        devices: Sequence[Device] | None = None,
        cards: CardSet | None = None,
        families: Mapping[str, Any] | None = None,
        remote: RemoteTools | None = None,
    ):
        settings = (settings or Settings.from_env()).with_(weights=weights, model_dir=model_dir,
                                                            session_root=session_root)  # fmt: skip
        self.settings = settings
        self.brain = brain_from(brain, settings, **dict(brain_options or {}))  # made on first chat
        self.cards = cards or load_cards()
        if settings.int8_weights:
            self.cards = self.cards.with_int8_diffusion()  # placement counts their int8 size
        self.items = parse_load_spec(load, self.cards) if isinstance(load, str) else list(load)
        self.remote = remote  # the cards it serves run on its replicas, not in this process
        local = [item for item in self.items if remote is None or not remote.serves(item.name)]
        budgets = dict(max_vram) if isinstance(max_vram, Mapping) else parse_budgets(max_vram)
        if remote is not None:  # the replicas keep the budgets of their devices
            budgets = {device: mb for device, mb in budgets.items() if device in {i.device for i in local}}
        if devices is None:
            devices = devices_for([i.device for i in local] + list(budgets))
        self.devices = keep_free_for_brain(list(devices), self.brain.config)
        self.plan: Plan = make_plan(self.cards, local, self.devices, budgets)
        self.resolver = WeightResolver(settings.weights, settings.model_dir, settings.cache_dir)
        self.manager = ModelManager(self.cards, self.plan, self.resolver, families=families,
                                    options=self._card_options)  # fmt: skip
        _check_weight_modes(self.items, settings, self.manager.family_of)
        cuda_budget = any(device.startswith("cuda") for device in budgets)
        self.fastpath = FastPath(
            enabled=settings.fast, compile=settings.compile, helper=settings.compile_helper,
            cache_dir=settings.inductor_dir, compiled_dir=settings.compiled_dir, compiled_file=settings.compiled_file,
            helper_budget=self.manager if cuda_budget else None,  # the helper's copy of a module counts in it
        )  # fmt: skip
        self.manager.fastpath = self.fastpath
        self.batcher = Batcher(self.manager, self.max_batch, wait_s=settings.batch_wait_ms / 1000)
        if image_limits is None and settings.weights == "tiny":
            image_limits = ImageLimits(max_side=int(self.cards.tiny_overrides.get("resolution", 512)))
        self.image_limits = image_limits or ImageLimits()
        self.session_root = settings.sessions_dir
        listed = {item.name for item in self.items}
        self.tools: dict[str, Tool] = {t.name: t for t in all_tools(self.cards) if t.card in listed}
        self.knowledge = Shelf(settings.knowledge_dir)  # the knowledge bases, opened on first use

    @property
    def weights(self) -> WeightsMode:
        return self.settings.weights

    def card_options(self, card: str) -> Mapping[str, Any]:
        return self._card_options(self.cards[card])

    def max_batch(self, card: str) -> int:
        """How many waiting calls of the card one pipeline call may make: ``--max-batch``, or the card's own
        ``max_batch`` option where that is lower."""
        own = self.cards[card].options.get("max_batch")
        return min(self.settings.max_batch, int(own)) if own is not None else self.settings.max_batch

    def _card_options(self, card: ModelCard | None) -> Mapping[str, Any]:
        """A card's options with this orchestrator's settings applied (None: those of shared components)."""
        options = dict(card.options) if card else {}
        if card is not None:  # what a family's client is built from (the web family: backend, allow-list)
            wanted = getattr(self.manager.family_of(card.name), "settings", ())
            options.update({name: getattr(self.settings, name) for name in wanted})
        if self.settings.weights == "tiny":
            options.update(self.cards.tiny_overrides)
        if not self.settings.fast:
            options["fast"] = False
        if not self.settings.compile:
            options["compile"] = False
        if self.settings.int8_weights:
            options["int8_weights"] = True
        if self.settings.fp8:
            options["fp8"] = True
        return options

    def new_session(self, folder: str | Path | None = None) -> Session:
        session_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        path = Path(folder) if folder else self.session_root / session_id
        path.mkdir(parents=True, exist_ok=True)
        return Session(self, path, session_id)

    def embedder(self, card: str | None = None) -> ManagedEmbedder:
        """The knowledge bases' embedder: ``card``, else the first text_embedding card of the load spec."""
        loaded = [i.name for i in self.items if self.cards[i.name].family == "text_embedding"]
        card = card or (loaded[0] if loaded else None)
        if card is None or card not in self.plan.placements:
            raise KnowledgeError(f"No embedder is loaded{f' ({card})' if card else ''}; add TextEmbedding_cpu "
                                 "(or TextEmbeddingEnglish_cpu) to --load.")  # fmt: skip
        return ManagedEmbedder(lambda: self.manager.use(card), self.cards[card].checkpoints["model"])

    def tool_list(self) -> list[dict[str, Any]]:
        return [tool.describe() for tool in self.tools.values()]

    def close(self) -> None:
        """Stop what runs beside the models: the background compiler's thread and the compile helper process."""
        self.fastpath.close()
        self.knowledge.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_weight_modes(
    items: Sequence[LoadItem], settings: Settings, family_of: Callable[[str], Family]
) -> None:
    """The weight modes the loaded cards and their devices allow, each refusal one sentence: not int8 and fp8 at
    once, fp8 only on GPUs that have it, and no mode that changes the shared UNet's layers under a card whose
    UNet carries a LoRA over them."""
    if settings.int8_weights and settings.fp8:
        raise SpecError("--int8-weights and --fp8 change the same layers; choose one of them.")
    if settings.fp8:
        from foundation_models.fp8 import unsupported

        for item in items:
            reason = unsupported(item.device) if family_of(item.name).fast.int8 else None
            if reason:
                raise SpecError(f"{item.name}: {reason}")
    modes = [flag for flag, on in (("--int8-weights", settings.int8_weights), ("--fp8", settings.fp8)) if on]
    lora = [item.name for item in items if modes and family_of(item.name).fast.lora]
    if lora:
        raise SpecError(f"{lora[0]} does not work with {modes[0]}: its LoRA needs the shared UNet's float layers. "
                        f"Start without {modes[0]}, or leave {lora[0]} out of --load.")  # fmt: skip
