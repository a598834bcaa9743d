"""The one place where benchmarks/ reaches into the fast path's internals (CUDA graphs, background compiler).

Sections time the fast path through the models' public calls; they come here only to wait for the background
compile, to drop captured graphs between variants, or to put a baseline pipeline on the fast path.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from foundation_models import fast_unet


def compiles_pending() -> bool:
    """Whether the background compiler has queued or running jobs."""
    return fast_unet.background_compiler().busy()


def wait_for_compiles(timeout: float) -> bool:
    """Block until the background compiler is idle; False when ``timeout`` seconds ran out first."""
    return fast_unet.background_compiler().wait(timeout=timeout)


def release(modules: list[Any]) -> None:
    """Drop the graphs captured for these modules, so the next call captures them again."""
    fast_unet.release(modules)


def graphed(modules: list[Any]) -> AbstractContextManager[None]:
    """Calls of these modules replay CUDA graphs of their eager forward while inside."""
    return fast_unet.graphed(modules)


def fast_pipeline(pipe: Any) -> AbstractContextManager[None]:
    """A diffusers pipeline (the baseline's) run through the project's fast path while inside."""
    return fast_unet.fast_pipeline(pipe)
