"""The Orchestrator: owns the cards, the plan, the model manager and the tools. Sessions share it."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from foundation_models.fastpath import FastPath

from .brain import Brain, BrainConfig, brain_from
from .brain.footprint import keep_free_for_brain
from .cards import CardSet, ModelCard, load_cards
from .devices import Device, devices_for
from .images import ImageLimits
from .manager import ModelManager
from .placement import Plan, make_plan
from .session import Session
from .spec import LoadItem, parse_budgets, parse_load_spec
from .toolbox import all_tools
from .tools import Tool
from .weights import WeightResolver, WeightsMode, cache_root

log = logging.getLogger(__name__)

DEFAULT_LOAD = "ImageCaptioning_auto,Text2Image_auto"
# Environment switches of the fast path, read here (not in foundation_models) when an argument is left as None.
FAST_ENV, COMPILE_ENV, HELPER_ENV = (
    "VISUAL_ORCHESTRATOR_FAST", "VISUAL_ORCHESTRATOR_COMPILE", "VISUAL_ORCHESTRATOR_COMPILE_HELPER"
)  # fmt: skip


class Orchestrator:
    """Plans placement at construction (nothing loads); models load on first use by any session."""

    def __init__(
        self,
        load: str | Sequence[LoadItem] = DEFAULT_LOAD,
        *,
        weights: WeightsMode = "hub",
        model_dir: str | Path | None = None,
        max_vram: str | list[str] | Mapping[str, int] | None = None,
        devices: Sequence[Device] | None = None,
        cards: CardSet | None = None,
        session_root: str | Path | None = None,
        image_limits: ImageLimits | None = None,
        families: Mapping[str, Any] | None = None,
        brain: str | BrainConfig | Brain | None = None,
        model: str | None = None,
        quant: str | None = None,
        trust_remote_code: bool = False,
        brain_options: Mapping[str, Any] | None = None,
        # The fast path (foundation_models/fastpath/); None: the environment decides (on unless set to 0).
        fast: bool | None = None,  # False: no CUDA-graph replay (--no-fast)
        compile: bool | None = None,  # False: graphs of the eager forward only, no compile (--no-compile)
        compile_helper: bool | None = None,  # False: compile in this process, not first in a helper process
        int8_weights: bool = False,  # True: UNets and ControlNets stored int8, about half their VRAM (--int8-weights)
    ):
        # "openai" | "rules" | "hf:<id-or-path>" | None (openai when OPENAI_API_KEY/OPENAI_BASE_URL is set);
        # made on first chat. brain_options: other BrainConfig fields (max_steps, turn_seconds, ...).
        self.brain = brain_from(brain, model=model, quant=quant, trust_remote_code=trust_remote_code,
                                **dict(brain_options or {}))  # fmt: skip
        self.cards = cards or load_cards()
        self.int8_weights = int8_weights
        if int8_weights:
            self.cards = self.cards.with_int8_diffusion()  # placement counts their int8 size
        self.items = parse_load_spec(load, self.cards) if isinstance(load, str) else list(load)
        budgets = dict(max_vram) if isinstance(max_vram, Mapping) else parse_budgets(max_vram)
        if devices is None:
            devices = devices_for([i.device for i in self.items] + list(budgets))
        self.devices = keep_free_for_brain(list(devices), self.brain.config)
        self.plan: Plan = make_plan(self.cards, self.items, self.devices, budgets)
        self.weights = weights
        self.fast = _switch(fast, FAST_ENV)
        self.compile = _switch(compile, COMPILE_ENV)
        self.resolver = WeightResolver(weights, model_dir)
        self.manager = ModelManager(self.cards, self.plan, self.resolver, families=families,
                                    options=self._card_options)  # fmt: skip
        cuda_budget = any(device.startswith("cuda") for device in budgets)
        self.fastpath = FastPath(
            enabled=self.fast, compile=self.compile, helper=_switch(compile_helper, HELPER_ENV),
            cache_dir=inductor_cache_dir(),
            helper_budget=self.manager if cuda_budget else None,  # the helper's copy of a module counts in it
        )  # fmt: skip
        self.manager.fastpath = self.fastpath
        if image_limits is None and weights == "tiny":
            image_limits = ImageLimits(max_side=int(self.cards.tiny_overrides.get("resolution", 512)))
        self.image_limits = image_limits or ImageLimits()
        self.session_root = Path(session_root) if session_root else cache_root() / "sessions"
        listed = {item.name for item in self.items}
        self.tools: dict[str, Tool] = {t.name: t for t in all_tools(self.cards) if t.card in listed}

    def card_options(self, card: str) -> Mapping[str, Any]:
        return self._card_options(self.cards[card])

    def _card_options(self, card: ModelCard | None) -> Mapping[str, Any]:
        """A card's options with this orchestrator's settings applied (None: those of shared components)."""
        options = dict(card.options) if card else {}
        if self.weights == "tiny":
            options.update(self.cards.tiny_overrides)
        if not self.fast:
            options["fast"] = False
        if not self.compile:
            options["compile"] = False
        if self.int8_weights:
            options["int8_weights"] = True
        return options

    def new_session(self, folder: str | Path | None = None) -> Session:
        session_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        path = Path(folder) if folder else self.session_root / session_id
        path.mkdir(parents=True, exist_ok=True)
        return Session(self, path, session_id)

    def tool_list(self) -> list[dict[str, Any]]:
        return [tool.describe() for tool in self.tools.values()]

    def close(self) -> None:
        """Stop what runs beside the models: the background compiler's thread and the compile helper process."""
        self.fastpath.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _switch(value: bool | None, env: str) -> bool:
    """An explicit argument, else the environment variable (on unless 0, false, no or off)."""
    if value is not None:
        return bool(value)
    return os.environ.get(env, "1").strip().lower() not in ("0", "false", "no", "off")


def inductor_cache_dir() -> Path:
    """Inductor's on-disk cache: the user's TORCHINDUCTOR_CACHE_DIR, else the project's cache (so compiled code
    survives a reboot, with the weights). Torch writes its own /tmp default into the environment when its
    compiler is imported; that value is not a choice, so it is replaced."""
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen and not _is_torch_default(chosen):
        return Path(chosen)
    return cache_root() / "inductor"


def _is_torch_default(path: str) -> bool:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return os.path.abspath(path) == os.path.abspath(default_cache_dir())
