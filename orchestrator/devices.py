"""What devices this machine has, and how much memory each has free. Only this module asks torch."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    name: str  # "cpu", "mps", "cuda:0", ...
    kind: str  # "cpu", "mps", "cuda"
    total_mb: int | None = None  # None: not known, not checked
    free_mb: int | None = None

    @property
    def is_accelerator(self) -> bool:
        return self.kind != "cpu"


CPU = Device("cpu", "cpu")


def cuda_device(index: int, total_mb: int, free_mb: int | None = None) -> Device:
    return Device(f"cuda:{index}", "cuda", total_mb, total_mb if free_mb is None else free_mb)


def detect_devices() -> list[Device]:
    """CPU, every visible CUDA GPU with its free memory, and MPS where present.

    torch is imported only if it is installed; counting GPUs does not load any model.
    """
    devices = [CPU]
    if importlib.util.find_spec("torch") is None:
        return devices
    import torch

    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            devices.append(cuda_device(index, total // 2**20, free // 2**20))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(Device("mps", "mps"))
    return devices


def devices_for(requested: list[str]) -> list[Device]:
    """The inventory a plan needs: only the CPU when nothing asks for another device (no torch import)."""
    if all(device == "cpu" for device in requested):
        return [CPU]
    return detect_devices()
