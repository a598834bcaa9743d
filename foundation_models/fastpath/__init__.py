"""The fast path on CUDA: graph replay of the diffusion networks, the text encoder and BLIP's decoder, and a
background ``torch.compile`` of their blocks, owned by one ``FastPath`` per Orchestrator.

| module | holds |
|---|---|
| ``core.py`` | ``FastPath``: the object an Orchestrator owns and hands to the families through their load context |
| ``graphs.py`` | ``GraphedForward`` (eager, then graph of eager, then graph of compiled), ``CudaGraphs``, ``WeightWatch`` |
| ``regions.py`` | ``RegionCompiler``: diffusers' repeated blocks compiled once per class and signature |
| ``compiler.py`` | ``BackgroundCompiler``: the worker thread that compiles while calls go on |
| ``helper.py`` | ``CompileHelper``: the child process that compiles each CUDA job first |
| ``budget.py`` | ``HelperMemoryBudget``: what the compiler asks a VRAM budget's keeper for the helper |
| ``torch_state.py`` | the two process-wide locks: torch's global state, and no capture beside GPU work |
| ``pipelines.py``, ``scheduler.py`` | which tiers a diffusers pipeline's modules get; sync-free scheduler steps |
| ``blip.py``, ``blip_inputs.py`` | BLIP's static-cache greedy decoding in graphs; what ``generate`` computes from |
| ``memory.py``, ``inductor.py`` | out-of-memory detection; how inductor is called and where it caches |
| ``artifacts.py`` | ``CompiledArtifacts``: compiled code as one file (torch's mega-cache), loaded before the first compile |
| ``precompiled.py`` | ``PrecompiledRegions``: regions compiled ahead (``aot_compile``), in the file: a restart traces none |

Nothing here reads the environment: the Orchestrator passes every setting in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .memory import is_out_of_memory
from .torch_state import building_models

if TYPE_CHECKING:
    from .budget import HelperMemoryBudget
    from .core import FastPath

__all__ = ["FastPath", "HelperMemoryBudget", "building_models", "is_out_of_memory"]
_LAZY = {"FastPath": ".core", "HelperMemoryBudget": ".budget"}


def __getattr__(name: str) -> Any:
    """``FastPath`` and ``HelperMemoryBudget`` on first use: importing them here would import helper.py with the
    package, and the helper's child (``python -m foundation_models.fastpath.helper``) would then run it twice."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
