"""The contract of a model family: what ``foundation_models/<family>.py`` declares, as data.

Each family module ends with one ``FAMILY = Family(...)``: how its models load, which files of a repository
its loader reads (the downloader fetches exactly those), what its warm-up call is given, and what the CUDA
fast path may do with its models — the way diffusers declares ``_repeated_blocks`` on a model class. The
model manager, the downloader, ``warmup`` and the fast path read these facts; none of them knows a family by
name. Adding a family is this declaration, one card in ``model_cards.yaml`` and one tiny builder
(``foundation_models/tiny``); ``docs/architecture.md`` walks through it.

A model a family's ``load`` returns is called by the tools (``orchestrator/toolbox``); if it owns weights it has
``to(device)`` that moves those (and only those), which the manager calls to offload it and bring it back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

Layout = Literal["pipeline", "diffusers", "transformers", "files"]


class LoadContext(Protocol):
    """What a family's ``load`` is given (the model manager's implementation: ``orchestrator.manager``)."""

    card: Any  # the model card being loaded (name, options, depends_on, ...); None for a shared component
    device: str  # "cpu", "cuda:0", "mps"
    options: Mapping[str, Any]  # the card's options with the orchestrator's settings applied
    fastpath: Any  # the Orchestrator's fast path (foundation_models.fastpath), or None

    @property
    def dtype(self) -> Any: ...  # a torch dtype

    def checkpoint(self, role: str, files: list[str] | None = None) -> Path: ...

    def group_checkpoint(self, group: str, files: list[str] | None = None) -> Path: ...

    def component(self, group: str, name: str) -> Any: ...  # a shared component, loaded once per device


@dataclass(frozen=True)
class Files:
    """Which files of a repository the loader reads.

    - ``pipeline``: a diffusers pipeline folder: ``model_index.json`` and its model folders, configs and one set of
      weights in each (the fp16 safetensors variant where there is one);
    - ``diffusers``: the same rule for one diffusers model at the repository's root;
    - ``transformers``: configs, tokenizer and processor files, ``model.safetensors`` (``pytorch_model.bin`` only
      where there is no safetensors);
    - ``files``: exactly the files named in ``by_key``, chosen by the card's ``detector`` option or by the shared
      component's name.
    """

    layout: Layout = "transformers"
    by_key: Mapping[str, str] = field(default_factory=dict)

    def named(self, key: str | None) -> str | None:
        return self.by_key.get(key or "")


@dataclass(frozen=True)
class Warmup:
    """What ``warmup`` gives the family's tools for their first calls: image arguments get the drawn photo,
    or with ``condition_map`` its edge map (a ControlNet refuses a colour picture). ``network``: its tools reach
    outside this machine (the web), so warm-up and the contract test load its models but call nothing."""

    condition_map: bool = False
    network: bool = False


@dataclass(frozen=True)
class FastFacts:
    """What the CUDA fast path does with the family's models.

    ``graphed``: pipeline attributes whose forward is replayed as CUDA graphs (per input signature); ``compiled``:
    those whose repeated blocks (``blocks``, class names, as diffusers' ``_repeated_blocks``) are compiled in the
    background, one compiled function per block class shared by every model; ``decoder``: greedy decoding with
    a static KV cache in graphs (BLIP). ``int8``: its networks may be stored int8 (``--int8-weights``).
    ``lora``: its UNet carries LoRA layers over the shared float UNet, so it refuses ``--int8-weights`` and
    ``--fp8``, which change those layers.
    """

    graphed: tuple[str, ...] = ()
    compiled: tuple[str, ...] = ()
    blocks: tuple[str, ...] = ()
    decoder: bool = False
    int8: bool = False
    lora: bool = False


@dataclass(frozen=True)
class Family:
    """One model family: see the module docstring."""

    name: str
    load: Callable[[LoadContext], Any]
    # for families that own shared component groups: (ctx, group, component name) -> module
    load_component: Callable[[LoadContext, Any, str], Any] | None = None
    files: Files = field(default_factory=Files)
    warmup: Warmup = field(default_factory=Warmup)
    fast: FastFacts = field(default_factory=FastFacts)
    # Settings fields its load reads (a client's configuration), given in ``ctx.options`` under their names
    settings: tuple[str, ...] = ()


def family_module(name: str) -> Family:
    """The declaration of ``foundation_models/<name>.py``; a clear error for a name that is not a family."""
    import importlib

    try:
        module = importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.{name}":
            raise
        raise LookupError(f"no model family {name!r}: there is no foundation_models/{name}.py") from None
    family = getattr(module, "FAMILY", None)
    if not isinstance(family, Family):
        raise LookupError(f"foundation_models/{name}.py declares no FAMILY = Family(...)")
    return family
