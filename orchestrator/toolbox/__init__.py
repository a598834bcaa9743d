"""Every tool the cards can expose, collected from explicit modules (nothing registers by side effect)."""

from __future__ import annotations

from ..cards import CardSet
from ..errors import CardError
from ..tools import Tool
from . import control, detection, editing, generation, knowledge, text, understanding, web

MODULES = [generation, understanding, editing, detection, control, knowledge, web, text]


def all_tools(cards: CardSet) -> list[Tool]:
    """The tools of every module, checked against the cards: each card's tools exist and point back to it."""
    tools = {t.name: t for module in MODULES for t in module.TOOLS}
    for card in cards.cards.values():
        for name in card.tools:
            if name not in tools:
                raise CardError(
                    f"Card {card.name}: field 'tools' names '{name}', which no toolbox module defines."
                )
            if tools[name].card != card.name:
                raise CardError(
                    f"Card {card.name}: field 'tools' names '{name}', which belongs to {tools[name].card}."
                )
    return [t for t in tools.values() if t.card in cards]
