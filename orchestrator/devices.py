"""What devices this machine has, and how much memory each has free. Only this module asks torch."""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    name: str  # "cpu", "mps", "cuda:0", ...
    kind: str  # "cpu", "mps", "cuda"
    total_mb: int | None = None  # None: not known, not checked
    free_mb: int | None = None
    reserved_mb: int = 0  # of the free memory, kept for a model that is not a card (an hf: brain)
    reserved_for: str = ""  # what, in words

    @property
    def is_accelerator(self) -> bool:
        return self.kind != "cpu"

    @property
    def available_mb(self) -> int | None:
        """What the cards may use: the free memory less what is reserved; None when not known."""
        return None if self.free_mb is None else max(0, self.free_mb - self.reserved_mb)


CPU = Device("cpu", "cpu")


def cuda_device(index: int, total_mb: int, free_mb: int | None = None) -> Device:
    return Device(f"cuda:{index}", "cuda", total_mb, total_mb if free_mb is None else free_mb)


def detect_devices() -> list[Device]:
    """CPU, every visible CUDA GPU with its free memory, and MPS where present.

    GPUs are read with ``nvidia-smi`` (milliseconds, no torch import, no CUDA context), honouring
    CUDA_VISIBLE_DEVICES; torch answers only where nvidia-smi cannot (UUIDs in CUDA_VISIBLE_DEVICES, no
    nvidia-smi, Apple's MPS). Counting devices never loads a model.
    """
    gpus = nvidia_smi_devices()
    if gpus is None:
        return _torch_devices()
    return [CPU, *gpus]


def nvidia_smi_devices() -> list[Device] | None:
    """The GPUs CUDA will see, as nvidia-smi reports them; None when it cannot tell (torch decides then)."""
    if platform.system() == "Darwin":
        return None
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [] if importlib.util.find_spec("torch") is None else None
    try:
        out = subprocess.run([exe, "--query-gpu=index,memory.total,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout  # fmt: skip
        rows = {
            int(i): (int(t), int(f))
            for i, t, f in (line.split(",") for line in out.strip().splitlines() if line)
        }
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    order = sorted(rows)
    if visible is not None:
        ids = [v.strip() for v in visible.split(",")]
        if not all(v.isdigit() for v in ids if v):
            return None  # UUIDs or MIG names: leave the mapping to CUDA
        order = []
        for v in ids:  # CUDA stops at the first id that does not exist
            if not v or int(v) not in rows:
                break
            order.append(int(v))
    return [cuda_device(n, *rows[index]) for n, index in enumerate(order)]


def _torch_devices() -> list[Device]:
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
