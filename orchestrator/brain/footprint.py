"""GPU memory an in-process (``hf:``) brain will take, known before it loads, so that placement leaves it free.

The brain loads on the first chat, after the tools' models are placed; without this, ``Text2Image_auto`` could
take the memory a local LLM needs a minute later. The estimate is the weight files on disk at the dtype the brain
loads in (float32 files load as 16-bit; ``--quant int8`` keeps about 0.55 of that, ``int4`` about 0.3), plus 10%
for the activations and KV cache of a turn. A model that is not on disk yet is estimated from its published size
when ``data/local_brains.yaml`` knows it (``known_brain_mb``), else it reserves nothing (and that is logged).
Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ..devices import Device
from .base import BrainConfig

log = logging.getLogger(__name__)

QUANT_FACTOR = {None: 1.0, "int8": 0.55, "int4": 0.3}  # resident bytes against 16-bit weights (bitsandbytes)
OVERHEAD = 1.1  # activations and the KV cache of one turn
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")
KNOWN_BRAINS = Path(__file__).resolve().parents[1] / "data" / "local_brains.yaml"
# Bytes per parameter of the linear layers as bitsandbytes stores them; embeddings and the output head stay 16-bit.
LINEAR_BYTES = {None: 2.0, "int8": 1.0, "int4": 0.5625}  # nf4: 4 bits + an fp32 absmax per 64 weights
CONTEXT_TOKENS = 8192  # a turn's prompt: history budget, system prompt, tool schemas, the reply
WORKSPACE_MB = 300  # prefill activations of such a prompt


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
        known = known_brain_mb(config.model, config.quant)
        if known is None:
            log.info(
                "the hf brain %s is not on disk yet: no memory kept free for it on %s", config.model, device
            )
            return None
        return device, known
    mb = weights_mb(folder, config.quant)
    return (device, mb) if mb else None


@cache
def known_brains() -> dict[str, dict[str, Any]]:
    """The local brains of ``data/local_brains.yaml``, by hub id."""
    return yaml.safe_load(KNOWN_BRAINS.read_text(encoding="utf-8"))


def known_brain_mb(model: str, quant: str | None = None, context: int = CONTEXT_TOKENS) -> int | None:
    """MB a known brain takes on a GPU (weights as bitsandbytes keeps them, the KV cache of ``context`` tokens in
    16 bits, the prefill's workspace), from its published sizes; None for a model the table does not know."""
    facts = known_brains().get(model)
    if facts is None:
        return None
    embedding = float(facts["embedding"])
    weights = (float(facts["params"]) - embedding) * LINEAR_BYTES[quant] + embedding * 2
    kv_cache = 2 * facts["layers"] * facts["kv_heads"] * facts["head_dim"] * 2 * context
    return round((weights * 1.02 + kv_cache) / 2**20) + WORKSPACE_MB


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
