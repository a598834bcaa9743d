"""Search backends, chosen by configuration: a SearxNG instance, DuckDuckGo (the ``ddgs`` package), Brave, Tavily.

Each returns :class:`Result` records (title, URL, snippet). The HTTP ones go through the guarded fetch; the
configured endpoint's host is allowed even when it is on the intranet (a SearxNG on this machine), since an
administrator named it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx

from . import WebError
from .guarded import GuardedFetcher, Limits
from .policy import AddressPolicy

BACKENDS = ("searxng", "duckduckgo", "brave", "tavily")
ENDPOINTS = {
    "brave": "https://api.search.brave.com/res/v1/web/search",
    "tavily": "https://api.tavily.com/search",
}
KEY_VARIABLES = {"brave": "BRAVE_API_KEY", "tavily": "TAVILY_API_KEY"}
JSON = ("application/json",)
LABELS = {"searxng": "SearxNG at {url}", "duckduckgo": "DuckDuckGo (ddgs)", "brave": "Brave Search",
          "tavily": "Tavily"}  # fmt: skip


def label_of(name: str | None, url: str | None = None) -> str | None:
    """What a configured backend is called where a person reads it (the models panel); None: off."""
    name = (name or "").strip().lower()
    if not name:
        return None
    return LABELS.get(name, name + " (unknown)").format(url=url or "(no address set)")


@dataclass(frozen=True)
class Result:
    title: str
    url: str
    snippet: str


class Backend(Protocol):
    label: str  # what the UI shows: "SearxNG at http://127.0.0.1:8888"

    def search(self, query: str, count: int) -> list[Result]: ...


@dataclass(frozen=True)
class SearxNG:
    url: str
    fetcher: GuardedFetcher

    @property
    def label(self) -> str:
        return label_of("searxng", self.url)

    def search(self, query: str, count: int) -> list[Result]:
        data = _json(self.fetcher.fetch(f"{self.url.rstrip('/')}/search?{urlencode({'q': query, 'format': 'json'})}",
                                        JSON), self.label)  # fmt: skip
        rows = data.get("results") if isinstance(data, dict) else None
        return _results(rows, "title", "url", "content", count)


@dataclass(frozen=True)
class Brave:
    key: str = field(repr=False)
    fetcher: GuardedFetcher
    endpoint: str = ENDPOINTS["brave"]
    label: str = LABELS["brave"]

    def search(self, query: str, count: int) -> list[Result]:
        url = f"{self.endpoint}?{urlencode({'q': query, 'count': count})}"
        data = _json(self.fetcher.fetch(url, JSON, headers={"X-Subscription-Token": self.key,
                                                           "Accept": "application/json"}), self.label)  # fmt: skip
        rows = (data.get("web") or {}).get("results") if isinstance(data, dict) else None
        return _results(rows, "title", "url", "description", count)


@dataclass(frozen=True)
class Tavily:
    key: str = field(repr=False)
    fetcher: GuardedFetcher
    endpoint: str = ENDPOINTS["tavily"]
    label: str = LABELS["tavily"]

    def search(self, query: str, count: int) -> list[Result]:
        fetched = self.fetcher.fetch(self.endpoint, JSON, method="POST", json={"query": query, "max_results": count},
                                     headers={"Authorization": f"Bearer {self.key}"})  # fmt: skip
        data = _json(fetched, self.label)
        rows = data.get("results") if isinstance(data, dict) else None
        return _results(rows, "title", "url", "content", count)


@dataclass(frozen=True)
class DuckDuckGo:
    timeout_s: float = 10.0
    label: str = LABELS["duckduckgo"]

    def search(self, query: str, count: int) -> list[Result]:
        from ddgs import DDGS
        from ddgs.exceptions import DDGSException

        try:
            rows = DDGS(timeout=max(1, round(self.timeout_s))).text(query, max_results=count)
        except DDGSException as exc:
            raise WebError(f"DuckDuckGo search failed ({str(exc)[:160]}); try again later.") from None
        return _results(rows, "title", "href", "body", count)


def backend_from(name: str | None, url: str | None, key: str | None, policy: AddressPolicy,
                 limits: Limits) -> Backend | None:  # fmt: skip
    """The configured backend, None when web search is off; WebError for a configuration that cannot work."""
    if not name:
        return None
    name = name.strip().lower()
    if name not in BACKENDS:
        raise WebError(f"Unknown web search backend '{name}'; use one of {', '.join(BACKENDS)}.")
    if name == "duckduckgo":
        return DuckDuckGo(limits.timeout_s)
    if name == "searxng" and not url:
        raise WebError(
            "Web search with searxng needs the instance's address in VISUAL_ORCHESTRATOR_WEB_SEARCH_URL."
        )
    if name in KEY_VARIABLES and not key:
        raise WebError(f"Web search with {name} needs an API key in {KEY_VARIABLES[name]}.")
    endpoint = url or ENDPOINTS[name]
    try:
        host = httpx.URL(endpoint).host
    except httpx.InvalidURL:
        raise WebError(f"The web search address '{endpoint}' is not a URL.") from None
    fetcher = GuardedFetcher(AddressPolicy(policy.networks, (*policy.hosts, host), policy.resolve), limits)
    if name == "searxng":
        return SearxNG(endpoint, fetcher)
    return Brave(key, fetcher, endpoint) if name == "brave" else Tavily(key, fetcher, endpoint)


def _json(fetched: Any, label: str) -> Any:
    try:
        return json.loads(fetched.body.decode(fetched.charset or "utf-8", "replace"))
    except ValueError:
        raise WebError(f"{label} answered with something that is not JSON.") from None


def _results(rows: Any, title: str, url: str, snippet: str, count: int) -> list[Result]:
    out = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict) or not str(row.get(url, "")).startswith(("http://", "https://")):
            continue
        text = " ".join(str(row.get(snippet) or "").split())
        out.append(
            Result(" ".join(str(row.get(title) or "").split())[:200] or row[url], row[url], text[:400])
        )
    return out[:count]
