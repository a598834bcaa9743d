"""The state one benchmark run shares between its sections: settings, results, the loaded models."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measure import Table

CUDA_SIZE, TINY_SIZE = 512, 64
WHOLE_SET = (
    "ours_all_resident_mb",
    "ours_weights_mb",
    "baseline_load_s",
    "baseline_import_s",
    "baseline_resident_mb",
)


@dataclass
class Settings:
    model_dir: Path  # DIR/org/name (hub mode) or the tiny cache (tiny mode)
    device: str  # cuda:0 or cpu
    tiny: bool  # tiny checkpoints and sizes: the CPU smoke run
    repeats: int = 5
    budget: str = "8GiB"
    deadline: float = float("inf")  # time.monotonic() after which optional work is skipped
    json_path: Path | None = None
    cards: tuple[str, ...] = ()  # only these cards (and their dependencies); all when empty
    compile: bool = True  # False: the latency section times graphs of the eager forward (--no-compile)
    save_images: Path | None = None  # where the agreement section writes its outputs as PNG

    @property
    def weights(self) -> str:
        return "tiny" if self.tiny else "hub"

    @property
    def size(self) -> int:
        return TINY_SIZE if self.tiny else CUDA_SIZE

    @property
    def steps(self) -> tuple[int, int]:
        return (2, 3) if self.tiny else (20, 50)

    @property
    def warmup(self) -> int:
        """Untimed calls before the timed ones (the fast path captures its graphs in the first)."""
        return 0 if self.tiny else 1

    @property
    def dtype(self) -> Any:
        import torch

        return torch.float32 if self.device == "cpu" else torch.float16

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class Run:
    settings: Settings
    results: dict[str, Any] = field(
        default_factory=lambda: {
            "meta": {},
            "values": {},
            "tables": [],
            "cards": {},
            "groups": {},
            "errors": {},
        }
    )
    orchestrator: Any = None  # ours, all cards resident on one device
    session: Any = None
    images: dict[str, str] = field(default_factory=dict)  # photo, mask, and each detector's map by tool name
    baseline: Any = None

    def value(self, key: str, value: Any) -> None:
        if self.settings.cards and key in WHOLE_SET:  # a run on some cards must not pass for the whole set
            key = f"{key} [{len(self.orchestrator_cards())} cards]"
        self.results["values"][key] = value

    def table(self, table: Table) -> None:
        print("\n" + table.markdown(), flush=True)
        self.results["tables"].append(table.as_dict())
        self.save()

    def save(self) -> None:
        if self.settings.json_path:
            self.settings.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.settings.json_path.write_text(json.dumps(self.results, indent=1, default=str) + "\n")

    def load_spec(self) -> str:
        device = self.settings.device
        return ",".join(f"{name}_{device}" for name in self.orchestrator_cards())

    def orchestrator_cards(self) -> list[str]:
        from orchestrator.cards import load_cards

        cards = load_cards()
        return cards.with_dependencies(list(self.settings.cards)) if self.settings.cards else cards.names()

    def new_orchestrator(self, max_vram: str | None = None, load: str | None = None, **settings: Any) -> Any:
        """The cards under test (or ``load``, a --load spec); ``settings`` are fields of the project's Settings
        (``compile=False``, ...)."""
        from orchestrator import Orchestrator
        from orchestrator.settings import Settings as Runtime  # the project's, not this file's Settings

        model_dir = None if self.settings.tiny else self.settings.model_dir
        runtime = Runtime.from_env(weights=self.settings.weights, model_dir=model_dir, **settings)
        return Orchestrator(load or self.load_spec(), settings=runtime, max_vram=max_vram)
