"""The two locks for what really is process-wide, shared by every ``FastPath`` in the process.

Each guards state that torch and CUDA keep once per process, not per object, so two Orchestrators (two
``FastPath`` objects) in one process must still take turns on them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# Torch's global state: transformers sets the default dtype while it builds a model, and dynamo saves it (and the
# RNG states) before it traces and restores it after, failing the compile if it changed meanwhile; a model built
# beside a trace could come out half float32. So building models and tracing (each compiled region call) take
# turns on this lock. Anything else that changes torch's global state for a while belongs under it too.
TORCH_GLOBALS = threading.RLock()

# CUDA graphs: no thread may run GPU work while another captures a graph. A background thread holds this lock
# whenever it works on the GPU (a compile, or the eager call that checks what is compiled), and a capture on any
# thread is skipped for that call while it is held.
BACKGROUND_GPU_WORK = threading.RLock()


@contextmanager
def building_models() -> Iterator[None]:
    """Hold while building or loading a model: nothing traces meanwhile, and a trace under way finishes first
    (a region's compile, seconds at most)."""
    with TORCH_GLOBALS:
        yield


@contextmanager
def capture_allowed() -> Iterator[bool]:
    """Whether this thread may capture a CUDA graph now (no background GPU work); held for the block if so."""
    acquired = BACKGROUND_GPU_WORK.acquire(blocking=False)
    try:
        yield acquired
    finally:
        if acquired:
            BACKGROUND_GPU_WORK.release()


def holding(lock: Any, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, called under ``lock``."""

    def call(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return function(*args, **kwargs)

    return call
