"""One ``Session`` per browser tab (or API client), keyed by Gradio's session hash, created lazily.

A tab's session goes away when the tab closes (Gradio's unload event), when its Clear button is
pressed (a fresh one replaces it), or after it has been idle for ``idle_seconds``. Its folder of
images goes with it: what a person wants to keep, they download from the chat.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine import Orchestrator
    from ..session import Session

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """A tab's session and the lock held while one of its turns runs (one turn at a time per tab)."""

    session: Session
    busy: threading.Lock = field(default_factory=threading.Lock)
    touched: float = field(default_factory=time.monotonic)
    closed: bool = False  # dropped from the pool; its folder goes when its last turn ends

    def release(self) -> None:
        """End a turn (``busy`` was acquired); a slot dropped meanwhile now removes its folder."""
        self.busy.release()
        if self.closed:
            _remove(self)


class SessionPool:
    def __init__(self, orchestrator: Orchestrator, idle_seconds: float = 6 * 3600, max_sessions: int = 1000):
        self.orchestrator = orchestrator
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._slots: dict[str, Slot] = {}
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, key: str | None) -> Slot:
        """The tab's slot, created on its first request."""
        key = key or "default"
        self.sweep(room_for=0 if key in self._slots else 1)
        with self._guard:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = Slot(self.orchestrator.new_session())
                log.info("new session %s for tab %s (%d open)", slot.session.id, key[:8], len(self._slots))
            slot.touched = time.monotonic()
            return slot

    def reset(self, key: str | None) -> Slot:
        """Forget the tab's session (history and images) and start a new one."""
        self.drop(key)
        return self.get(key)

    def drop(self, key: str | None) -> None:
        with self._guard:
            slot = self._slots.pop(key or "default", None)
        if slot is not None:
            _remove(slot)

    def sweep(self, room_for: int = 0) -> None:
        """Drop sessions idle for longer than ``idle_seconds``, then the least recently used ones until
        ``room_for`` new sessions fit under ``max_sessions``. A session in the middle of a turn stays."""
        now = time.monotonic()
        with self._guard:
            idle = sorted(self._slots.items(), key=lambda item: item[1].touched)
            expired = [k for k, s in idle if now - s.touched > self.idle_seconds and not s.busy.locked()]
            overflow = len(self._slots) - len(expired) + room_for - self.max_sessions
            if overflow > 0:
                expired += [k for k, s in idle if k not in expired and not s.busy.locked()][:overflow]
            slots = [self._slots.pop(k) for k in expired]
        for slot in slots:
            _remove(slot)


def _remove(slot: Slot) -> None:
    """Delete a session's folder, or mark it to be deleted when the turn running in it ends."""
    slot.closed = True
    if slot.busy.locked():
        return
    shutil.rmtree(slot.session.folder, ignore_errors=True)
    log.info("session %s closed", slot.session.id)
