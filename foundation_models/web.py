"""The web family: WebSearch and WebReader own no weights; the "model" each loads is a configured client.

Loading builds the client from the card's options (``kind``: search or reader; limits) and the Orchestrator's
settings this family declares (``settings=`` below: the search backend, its address and key, the allow-list).
Nothing is sent while loading, so warm-up and the contract test load these cards without calling them
(``Warmup(network=True)``); the client code is in ``foundation_models/webclient``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .family import Family, Warmup
from .webclient import WebError
from .webclient.guarded import Fetched, GuardedFetcher, Limits
from .webclient.page import TEXT, PageText, extract
from .webclient.policy import AddressPolicy
from .webclient.search import Backend, Result, backend_from

IMAGES = ("image/",)


@dataclass
class WebSearch:
    backend: Backend | None  # None: web search is off (no backend configured)
    max_results: int = 5

    @property
    def label(self) -> str:
        return self.backend.label if self.backend else "off"

    def search(self, query: str, count: int) -> list[Result]:
        if self.backend is None:
            raise WebError("Web search is off: set VISUAL_ORCHESTRATOR_WEB_SEARCH to searxng, duckduckgo, brave "
                           "or tavily (docs/web.md).")  # fmt: skip
        return self.backend.search(query, max(1, min(count, self.max_results)))

    def to(self, device: str) -> None:
        """Nothing to move: a client holds no weights."""


@dataclass
class WebReader:
    fetcher: GuardedFetcher = field(repr=False)
    max_chars: int = 6000
    max_images: int = 4

    def read(self, url: str) -> PageText:
        return extract(self.fetcher.fetch(url, TEXT))

    def image(self, url: str, max_bytes: int) -> Fetched:
        return self.fetcher.fetch(url, IMAGES, max_bytes=max_bytes)

    def to(self, device: str) -> None:
        """Nothing to move: a client holds no weights."""


def load(ctx: Any) -> WebSearch | WebReader:
    options = ctx.options
    limits = Limits(max_bytes=int(options.get("max_bytes", Limits.max_bytes)),
                    timeout_s=float(options.get("timeout_s", Limits.timeout_s)),
                    max_redirects=int(options.get("max_redirects", Limits.max_redirects)))  # fmt: skip
    policy = AddressPolicy.from_allow_list(options.get("web_allow") or ())
    if options.get("kind") == "search":
        backend = backend_from(options.get("web_search"), options.get("web_search_url"),
                               options.get("web_search_key"), policy, limits)  # fmt: skip
        return WebSearch(backend, int(options.get("max_results", 5)))
    return WebReader(GuardedFetcher(policy, limits), int(options.get("max_chars", 6000)),
                     int(options.get("max_images", 4)))  # fmt: skip


FAMILY = Family(
    "web", load, warmup=Warmup(network=True),
    settings=("web_search", "web_search_url", "web_search_key", "web_allow"),
)  # fmt: skip
