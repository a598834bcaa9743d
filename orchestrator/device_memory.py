"""What the model manager asks of torch about a device's memory: how much this process holds, a hard cap on
torch's allocator, moving a model, returning cached blocks. Each is a no-op where torch or CUDA is absent."""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


def move(obj: Any, device: str) -> None:
    mover = getattr(obj, "to", None)
    if callable(mover):
        mover(device)


def empty_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_memory_mb(device: str) -> float | None:
    """MB this process holds on a CUDA device (reserved by torch's allocator: graph pools and cached blocks
    included); None elsewhere."""
    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.cuda.memory_reserved(device) / 2**20


def cap_allocator(device: str, mb: int) -> None:
    """Torch's caching allocator on this CUDA device takes at most ``mb`` (it frees cached blocks, then raises
    OutOfMemoryError, rather than take more)."""
    import torch

    if not torch.cuda.is_available():
        return
    index = torch.device(device).index or 0
    total = torch.cuda.get_device_properties(index).total_memory / 2**20
    torch.cuda.set_per_process_memory_fraction(max(0.0, min(1.0, mb / total)), index)
    log.info("torch's allocator on %s capped at %d MB (the budget)", device, mb)
