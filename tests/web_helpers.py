"""Orchestrators with the web cards pointed at a fixture site (tests/web_site.py) on 127.0.0.1."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator import Orchestrator
from orchestrator.cards import CardSet, load_cards
from orchestrator.settings import Settings

WEB = "WebSearch_cpu,WebReader_cpu"


def web_cards(**reader_options: Any) -> CardSet:
    """The registry with the WebReader card's options changed (a short timeout for the slow page)."""
    cards = load_cards()
    reader = replace(cards["WebReader"], options={**cards["WebReader"].options, **reader_options})
    return replace(cards, cards={**cards.cards, "WebReader": reader})


def web_orchestrator(site: Any, root: Path, *, allow: tuple[str, ...] = ("127.0.0.1",), search: str | None = "searxng",
                     search_url: str | None = None, key: str | None = None, load: str = WEB,
                     cards: CardSet | None = None, **options: Any) -> Orchestrator:  # fmt: skip
    settings = Settings.from_env(web_search=search, web_search_url=search_url or (site.url("") if search else None),
                                 web_search_key=key, web_allow=allow)  # fmt: skip
    options = {"brain": "rules", **options}
    return Orchestrator(load, weights="tiny", settings=settings, session_root=root, cards=cards, **options)
