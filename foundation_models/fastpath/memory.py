"""How the fast path tells a failure that only means "no memory now" from one that means "this cannot work"."""

from __future__ import annotations

import sys


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether a failure was the GPU (or a VRAM budget's cap on torch's allocator) running out of memory."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def reason(exc: BaseException) -> str:
    """An exception in one line for a log: its first line that says something (dynamo's says only which
    backend raised, and the cause follows on the next line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [
        line for line in lines if not (line.startswith("backend=") and line.endswith("raised:"))
    ] or lines
    return lines[0] if lines else type(exc).__name__
