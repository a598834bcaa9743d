"""One guarded HTTP request: checked addresses, pinned connections, and limits on time, size, redirects and types.

Each hop (the first request and every redirect) resolves its host, checks every address (``policy.py``) and
connects to the checked one by IP, with the real name in the Host header and TLS's SNI (httpx's
``sni_hostname`` extension), so the certificate is verified for the name. Redirects are followed here, never by
httpx, so each one is checked before anything is sent. The body is read raw and decompressed here with a cap,
so a gzip bomb stops at the size limit instead of filling memory; proxies from the environment are ignored,
since a proxy would make the connection to an address that was not checked.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from . import WebError
from .policy import AddressPolicy

MB = 2**20
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "visual-orchestrator/0.1 (read_url; +https://github.com/visual-orchestrator)"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 5 * MB  # of the body after decompression
    timeout_s: float = 10.0  # the whole fetch, redirects included
    max_redirects: int = 5


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    content_type: str  # "text/html", without parameters
    charset: str | None
    body: bytes


class GuardedFetcher:
    """``fetch(url, accept=("text/html",))`` under an :class:`AddressPolicy` and :class:`Limits`."""

    def __init__(self, policy: AddressPolicy, limits: Limits | None = None):
        self.policy = policy
        self.limits = limits or Limits()

    def fetch(
        self,
        url: str,
        accept: tuple[str, ...],
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        max_bytes: int | None = None,
    ) -> Fetched:
        """The body of ``url`` if its type is one of ``accept`` (a type, or a prefix ending in '/')."""
        deadline = time.monotonic() + self.limits.timeout_s
        limit = max_bytes or self.limits.max_bytes
        first = url
        # No pooled connections: each hop's connection is made for its own checked address and name.
        with httpx.Client(trust_env=False, follow_redirects=False,
                          limits=httpx.Limits(max_keepalive_connections=0)) as client:  # fmt: skip
            for _ in range(self.limits.max_redirects + 1):
                target = _parse(url)
                address = self.policy.pin(target.raw_host.decode("ascii"), target.port or _port(target))
                response = self._send(client, target, address, method, headers, json, deadline)
                try:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECTS and location:
                        if method != "GET":
                            raise WebError(
                                f"{_shown(url)} answered with a redirect, which is not followed here."
                            )
                        url = urljoin(str(target), location)
                        continue
                    return self._body(response, str(target), accept, limit, deadline)
                finally:
                    response.close()
        raise WebError(f"{_shown(first)} redirected more than {self.limits.max_redirects} times; refused.")

    def _send(self, client: httpx.Client, target: httpx.URL, address: str, method: str,
              headers: Mapping[str, str] | None, json: Any, deadline: float) -> httpx.Response:  # fmt: skip
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._too_slow(target)
        name = target.raw_host.decode("ascii")
        host_header = name if target.port is None else f"{name}:{target.port}"
        sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate", **(headers or {}),
                "Host": host_header}  # fmt: skip
        extensions = {"sni_hostname": name} if target.scheme == "https" else {}
        request = client.build_request(method, target.copy_with(host=address), headers=sent, json=json,
                                       timeout=httpx.Timeout(remaining), extensions=extensions)  # fmt: skip
        try:
            return client.send(request, stream=True)
        except httpx.TimeoutException:
            raise self._too_slow(target) from None
        except httpx.HTTPError as exc:
            raise WebError(f"Could not reach {_shown(str(target))} ({_reason(exc)}).") from None

    def _body(self, response: httpx.Response, url: str, accept: tuple[str, ...], limit: int,
              deadline: float) -> Fetched:  # fmt: skip
        if response.status_code >= 400:
            raise WebError(f"{_shown(url)} answered HTTP {response.status_code} {response.reason_phrase}.")
        content_type, _, params = response.headers.get("content-type", "").partition(";")
        content_type = content_type.strip().lower() or "an unknown type"
        if not any(content_type == a or (a.endswith("/") and content_type.startswith(a)) for a in accept):
            wanted = ", ".join(a.rstrip("/") for a in accept)
            raise WebError(f"{_shown(url)} is {content_type}, not a type this tool reads ({wanted}).")
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise WebError(f"{_shown(url)} is {_mb(int(length))}; the limit is {_mb(limit)}.")
        decoder = _Decoder(response.headers.get("content-encoding", ""), url)
        parts, size = [], 0
        try:
            for raw in response.iter_raw():
                if time.monotonic() > deadline:
                    raise self._too_slow(url)
                data = decoder.feed(raw, limit - size)
                size += len(data)
                if size > limit:
                    unpacked = " once decompressed" if decoder.compressed else ""
                    raise WebError(f"{_shown(url)} is larger than {_mb(limit)}{unpacked}; refused.")
                parts.append(data)
        except httpx.TimeoutException:
            raise self._too_slow(url) from None
        except httpx.HTTPError as exc:
            raise WebError(f"{_shown(url)} could not be read ({_reason(exc)}).") from None
        charset = next((p.split("=", 1)[1].strip(" \"'") for p in params.split(";") if "charset=" in p.lower()),
                       None)  # fmt: skip
        return Fetched(url, content_type, charset, b"".join(parts))

    def _too_slow(self, url: object) -> WebError:
        return WebError(
            f"{_shown(str(url))} took longer than {self.limits.timeout_s:g} s to arrive; refused."
        )


class _Decoder:
    """Content-Encoding gzip or deflate, decompressed at most ``room`` + 1 bytes at a time."""

    def __init__(self, encoding: str, url: str):
        codings = [
            c.strip().lower() for c in encoding.split(",") if c.strip().lower() not in ("", "identity")
        ]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise WebError(f"{_shown(url)} came compressed as '{encoding}', which this tool does not accept.")
        self.url = url
        self.compressed = bool(codings)
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 32) if codings else None  # 32: a gzip or zlib header

    def feed(self, raw: bytes, room: int) -> bytes:
        if self._zlib is None:
            return raw
        try:
            return self._zlib.decompress(raw, max(room, 0) + 1)  # one byte past the room: over the limit
        except zlib.error:
            raise WebError(f"{_shown(self.url)} could not be decompressed; it may be damaged.") from None


def _parse(url: str) -> httpx.URL:
    try:
        target = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        raise WebError(
            f"'{_shown(url)}' is not a web address; give one that starts with http:// or https://."
        ) from None
    if target.scheme not in ("http", "https") or not target.host:
        raise WebError(
            f"'{_shown(url)}' is not a web address; give one that starts with http:// or https://."
        )
    if target.userinfo:
        raise WebError(
            "That address carries a user name or password; web tools send none, give it without them."
        )
    return target


def _port(target: httpx.URL) -> int:
    return 443 if target.scheme == "https" else 80


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _shown(url: str, limit: int = 160) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in url)
    return text if len(text) <= limit else text[: limit - 1] + "…"
