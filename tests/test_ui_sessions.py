"""One session per browser tab: created on first use, replaced by Clear, gone when the tab closes or idles."""

from __future__ import annotations

import itertools
from pathlib import Path

from orchestrator.ui.sessions import SessionPool


class FakeOrchestrator:
    def __init__(self, root: Path):
        self.root, self.count = root, itertools.count()

    def new_session(self):
        folder = self.root / f"s{next(self.count)}"
        folder.mkdir()
        return type("FakeSession", (), {"id": folder.name, "folder": folder})()


def test_each_tab_gets_its_own_session_and_keeps_it(tmp_path):
    pool = SessionPool(FakeOrchestrator(tmp_path))
    a, b = pool.get("tab-a"), pool.get("tab-b")
    assert a.session is not b.session and pool.get("tab-a") is a and len(pool) == 2


def test_clear_replaces_only_this_tabs_session_and_deletes_its_images(tmp_path):
    pool = SessionPool(FakeOrchestrator(tmp_path))
    a, b = pool.get("tab-a"), pool.get("tab-b")
    fresh = pool.reset("tab-a")
    assert fresh.session is not a.session and not a.session.folder.exists()
    assert pool.get("tab-b") is b and b.session.folder.exists()


def test_a_tab_closed_during_a_turn_keeps_its_folder_until_the_turn_ends(tmp_path):
    pool = SessionPool(FakeOrchestrator(tmp_path))
    slot = pool.get("tab-a")
    assert slot.busy.acquire(blocking=False)
    pool.drop("tab-a")
    assert slot.session.folder.exists() and len(pool) == 0
    slot.release()
    assert not slot.session.folder.exists()


def test_idle_and_surplus_sessions_are_dropped_but_never_a_busy_one(tmp_path):
    pool = SessionPool(FakeOrchestrator(tmp_path), idle_seconds=60, max_sessions=3)
    idle, busy = pool.get("idle"), pool.get("busy")
    busy.busy.acquire()
    idle.touched -= 120
    busy.touched -= 120
    pool.get("new")
    assert set(pool._slots) == {"busy", "new"} and not idle.session.folder.exists()
    pool.get("x")
    pool.get("new")  # a known tab at the limit evicts nobody
    assert set(pool._slots) == {"busy", "new", "x"}
    pool.get("y")  # a new one evicts the least recently used idle tab
    assert set(pool._slots) == {"busy", "new", "y"}
    busy.release()
