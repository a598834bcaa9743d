"""Helpers shared by the tiny-checkpoint builders: stable seeds, JSON files, quiet saving."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol


class _Saveable(Protocol):
    def save_pretrained(self, save_directory: Path) -> Any: ...


def stable_seed(name: str) -> int:
    """A seed derived from `name` that is the same on every machine and Python run."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % (2**31)


@contextmanager
def seeded(name: str) -> Iterator[None]:
    """Seed torch from `name` for the block, leaving the caller's random state untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(name))
        yield


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented, key-sorted JSON, as hub config files are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_quietly(saveable: _Saveable, folder: Path) -> None:
    """`save_pretrained` without transformers' "Writing model shards" progress bar on stderr."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        saveable.save_pretrained(folder)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
