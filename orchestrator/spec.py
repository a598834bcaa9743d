"""The --load spec (``Name_device,...``) and --max-vram budgets (``cuda:0=8GiB,...``)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .cards import CardSet
from .errors import SpecError, shown

DEVICE = re.compile(r"^(cpu|mps|auto|cuda(:\d+)?)$")
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$", re.IGNORECASE)
UNIT_MB = {None: 1.0, "b": 1 / 2**20, "kb": 1e3 / 2**20, "kib": 1 / 1024, "mb": 1e6 / 2**20, "mib": 1.0,
           "gb": 1e9 / 2**20, "gib": 1024.0, "tb": 1e12 / 2**20, "tib": 1024.0**2}  # fmt: skip


@dataclass(frozen=True)
class LoadItem:
    name: str
    device: str  # cpu, mps, auto or cuda:N (a bare "cuda" means cuda:0)


def parse_load_spec(spec: str, cards: CardSet) -> list[LoadItem]:
    """``"ImageCaptioning_cuda:0,Text2Image_cpu"`` -> items; one clear sentence for each mistake."""
    items: list[LoadItem] = []
    seen: dict[str, str] = {}
    for raw in (part.strip() for part in spec.split(",")):
        if not raw:
            continue
        name, _, device = raw.rpartition("_") if "_" in raw else (raw, "", "auto")
        device = device.strip().lower()
        if not DEVICE.fullmatch(device):
            raise SpecError(
                f"'{shown(raw)}' has an unknown device '{shown(device)}': use cpu, cuda, cuda:N, mps or auto."
            )
        if name not in cards:
            raise SpecError(_unknown_name(name, cards))
        if name in seen:
            raise SpecError(f"{name} is listed twice in --load ({seen[name]} and {shown(raw)}); keep one.")
        seen[name] = raw
        items.append(LoadItem(name, "cuda:0" if device == "cuda" else device))
    if not items:
        raise SpecError("--load is empty: name at least one model, e.g. --load ImageCaptioning_cpu.")
    return items


def _unknown_name(name: str, cards: CardSet) -> str:
    close = difflib.get_close_matches(name, cards.names(), n=1, cutoff=0.5)
    if not close:
        lowered = {n.lower(): n for n in cards.names()}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    hint = f" Did you mean {close[0]}?" if close else ""
    return f"Unknown model '{shown(name)}'.{hint} Known models: {', '.join(cards.names())}."


def parse_size_mb(text: str, where: str) -> int:
    match = SIZE.fullmatch(text)
    if not match:
        raise SpecError(f"{where}: '{shown(text)}' is not a size; write it like 8GiB, 8000MB or 8000 (MiB).")
    number, unit = match.groups()
    return int(float(number) * UNIT_MB[unit.lower() if unit else None])


def parse_budgets(specs: str | list[str] | None) -> dict[str, int]:
    """``"cuda:0=8GiB,cpu=16GiB"`` (or a list of such strings) -> {device: MB}."""
    if not specs:
        return {}
    parts = [p.strip() for s in ([specs] if isinstance(specs, str) else specs) for p in s.split(",")]
    budgets: dict[str, int] = {}
    for part in filter(None, parts):
        device, sep, size = part.partition("=")
        device = device.strip().lower()
        device = "cuda:0" if device == "cuda" else device
        if not sep or not DEVICE.fullmatch(device) or device == "auto":
            raise SpecError(f"--max-vram '{shown(part)}' must look like cuda:0=8GiB (a device, '=', a size).")
        budgets[device] = parse_size_mb(size, f"--max-vram {device}")
    return budgets
