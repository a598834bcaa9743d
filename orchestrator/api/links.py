"""Image URLs the API hands out: unguessable, tied to the key that made them, gone when their session expires.

A chat app shows a reply's images with ``<img src=…>``, which sends no ``Authorization`` header; so with an API
key each URL also carries a signature (HMAC-SHA256 of its token under the key) and is served for the bearer key
or that signature, nothing else. The token is 32 random bytes: knowing one URL tells nothing of another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Link:
    token: str
    owner: str  # who may use it: a hash of the API key, or "local" without one
    path: Path  # the PNG in its session's folder
    name: str  # the image's name in that session (image/1a2b3c4d.png)
    folder: Path  # the session folder, removed when its links expire
    expires: float


class Links:
    def __init__(self, ttl_s: float, secret: str | None):
        self.ttl_s = ttl_s
        self.secret = secret
        self._links: dict[str, Link] = {}
        self._folders: dict[Path, float] = {}  # session folder -> when it expires
        self._lock = threading.Lock()

    def add(self, owner: str, folder: Path, name: str) -> Link:
        expires = time.time() + self.ttl_s
        link = Link(secrets.token_urlsafe(32), owner, folder / name, name, folder, expires)
        with self._lock:
            self._links[link.token] = link
            self._folders[folder] = max(self._folders.get(folder, 0.0), expires)
        return link

    def get(self, token: str, owner: str | None = None) -> Link | None:
        """The live link (for ``owner`` only, when given), or None."""
        with self._lock:
            link = self._links.get(token)
        if link is None or link.expires < time.time() or (owner is not None and link.owner != owner):
            return None
        return link if link.path.is_file() else None

    def signature(self, token: str) -> str:
        if not self.secret:
            return ""
        return hmac.new(self.secret.encode(), token.encode(), hashlib.sha256).hexdigest()[:32]

    def signed(self, token: str, sig: str | None) -> bool:
        return bool(self.secret and sig and hmac.compare_digest(self.signature(token), sig))

    def expire(self, now: float | None = None) -> int:
        """Forget expired links and delete the session folders whose links all expired; returns folders removed."""
        now = time.time() if now is None else now
        with self._lock:
            self._links = {t: link for t, link in self._links.items() if link.expires >= now}
            gone = [folder for folder, until in self._folders.items() if until < now]
            for folder in gone:
                del self._folders[folder]
        for folder in gone:
            shutil.rmtree(folder, ignore_errors=True)
        return len(gone)

    def track(self, folder: Path) -> None:
        """A session folder that made no image yet still expires (and is removed) after the same time."""
        with self._lock:
            self._folders.setdefault(folder, time.time() + self.ttl_s)


def owner_of(api_key: str | None) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else "local"
