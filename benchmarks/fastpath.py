"""The one place where benchmarks/ reaches into the fast path's internals (CUDA graphs, background compiler).

Sections time the fast path through the models' public calls; they come here only to wait for an
orchestrator's background compile, to drop captured graphs between variants, or to put a baseline pipeline on
an orchestrator's fast path.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from foundation_models.fastpath import graphs


def compiles_pending(orchestrator: Any) -> bool:
    """Whether the orchestrator's background compiler has queued or running jobs."""
    return orchestrator.fastpath.compiler.busy()


def wait_for_compiles(orchestrator: Any, timeout: float) -> bool:
    """Block until the orchestrator's background compiler is idle; False when ``timeout`` seconds ran out first."""
    return orchestrator.fastpath.compiler.wait(timeout)


def release(modules: list[Any]) -> None:
    """Drop the graphs captured for these modules, so the next call captures them again."""
    graphs.release(modules)


def graphed(modules: list[Any]) -> AbstractContextManager[None]:
    """Calls of these modules replay CUDA graphs of their eager forward while inside."""
    return graphs.graphed(modules)


def fast_pipeline(orchestrator: Any, pipe: Any) -> AbstractContextManager[None]:
    """A diffusers pipeline (the baseline's) run through the orchestrator's fast path while inside."""
    return orchestrator.fastpath.pipeline(pipe)
