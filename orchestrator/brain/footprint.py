"""GPU memory an in-process (``hf:``) brain will take, known before it loads, so that placement leaves it free.

The brain loads on the first chat, after the tools' models are placed; without this, ``Text2Image_auto`` could
take the memory a local LLM needs a minute later. The estimate is the weight files on disk at the dtype the brain
loads in (float32 files load as 16-bit; ``--quant int8`` keeps about 0.55 of that, ``int4`` about 0.3), plus 10%
for the activations and KV cache of a turn. A model that is not on disk yet reserves nothing (it is reported).
Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..devices import Device
from .base import BrainConfig

log = logging.getLogger(__name__)

QUANT_FACTOR = {None: 1.0, "int8": 0.55, "int4": 0.3}  # resident bytes against 16-bit weights (bitsandbytes)
OVERHEAD = 1.1  # activations and the KV cache of one turn
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")


def keep_free_for_brain(devices: list[Device], config: BrainConfig) -> list[Device]:
    """``devices`` with the hf brain's memory reserved on its GPU (placement then leaves it free)."""
    reservation = brain_reservation(config, devices)
    if reservation is None:
        return devices
    name, mb = reservation
    log.info("keeping %s MB of %s free for the hf brain %s", f"{mb:,}", name, config.model)
    return [replace(d, reserved_mb=mb, reserved_for=f"the hf brain {config.model}") if d.name == name else d
            for d in devices]  # fmt: skip


def brain_reservation(config: BrainConfig, devices: Sequence[Device]) -> tuple[str, int] | None:
    """(device, MB) to keep free for an ``hf:`` brain on a CUDA device among ``devices``; None otherwise."""
    if config.kind != "hf" or not config.model:
        return None
    device = _device(config.device, devices)
    if device is None:
        return None
    folder = model_folder(config.model)
    if folder is None:
        log.info("the hf brain %s is not on disk yet: no memory kept free for it on %s", config.model, device)
        return None
    mb = weights_mb(folder, config.quant)
    return (device, mb) if mb else None


def weights_mb(folder: Path, quant: str | None = None) -> int:
    """MB the model in ``folder`` takes on a GPU once loaded by the hf brain (see the module docstring)."""
    for pattern in WEIGHT_FILES:
        files = sorted(folder.glob(pattern))
        if files:
            break
    else:
        return 0
    size = sum(f.stat().st_size for f in files)  # stat follows the HF cache's links to its blobs
    if _stored_dtype(folder) == "float32":
        size //= 2
    return round(size / 2**20 * QUANT_FACTOR.get(quant, 1.0) * OVERHEAD)


def model_folder(model: str) -> Path | None:
    """A local folder, or the hub id's snapshot in the HF cache; None when it is not on disk."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not in the cache (or not a hub id): nothing to measure
        return None


def _device(name: str | None, devices: Sequence[Device]) -> str | None:
    """The CUDA device the brain goes to (hf_local: its --device, else ``cuda``, the first GPU) if placed on."""
    cuda = [d.name for d in devices if d.kind == "cuda"]
    if name is None:
        return cuda[0] if cuda else None
    name = "cuda:0" if name == "cuda" else name
    return name if name in cuda else None


def _stored_dtype(folder: Path) -> str | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("dtype") or config.get("torch_dtype")
