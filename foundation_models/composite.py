"""Composite cards (ObjectSegmenting, ImageEditing, BackgroundRemoving, InfinityOutPainting) own no weights.

Their tools run the cards they depend on (``depends_on`` in model_cards.yaml) one after another; loading
one of these cards gives a placeholder so the manager can treat every card alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .family import Family


@dataclass(frozen=True)
class Composite:
    card: str
    depends_on: tuple[str, ...]

    def to(self, device: str) -> None:
        """Nothing to move: the cards it depends on are placed and moved by the manager."""


def load(ctx: Any) -> Composite:
    return Composite(ctx.card.name, tuple(ctx.card.depends_on))


FAMILY = Family("composite", load)  # no weights: its tools run the cards it depends on
