"""Batching across sessions: calls of one card with the same settings that wait for its device run as one call.

A tool hands its item (the prompt, negative prompt and seed of one picture) and the settings its pipeline call
shares with others (size, steps, guidance; the card fixes the pipeline and scheduler) to ``Batcher.run``. Calls
of a card with equal settings queue in arrival order; only the oldest goes for the device (``ModelManager.use``:
one call at a time per device), the others wait for it. When it gets the device it takes the calls waiting then
(at most the card's ``max_batch``, and a size the model runs without new CUDA graphs: ``model.batch_size``) and
runs them as one ``model.generate_batch(items, **settings, progress=...)``; the oldest call left over goes for
the device next, and calls that arrive meanwhile join it. A call that finds the device free runs at once, alone:
batches form only from calls that queue while it is busy. With ``wait_s`` > 0 the call that gets the device
waits up to that long for the members of its group's last batch that have not come back yet (sessions making
calls in a row, whose next calls would otherwise arrive just after a batch has started).

Each member keeps its own outcome. Step reports go to every member; a member whose report raises (its caller
gave up) gets that exception and the others go on. A batch that fails runs again in halves, down to single
calls, so one member's bad input or an out-of-memory error at a large batch costs the others only time; a
single call's error is its own (out of memory then takes the caller's evict-and-retry path, calls.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (step, total)
Key = tuple[str, tuple[tuple[str, Any], ...]]  # (card, settings)
RETURN_HORIZON_S = 1.0  # with wait_s: a batch's members are expected back this long after it ends, not later


class Batchable(Protocol):
    """A model that makes several items in one call (``foundation_models.stable_diffusion._Batched``)."""

    def batch_size(self, waiting: int, limit: int) -> int: ...

    def generate_batch(
        self, items: Sequence[Any], *, progress: ProgressFn | None = None, **settings: Any
    ) -> list[Any]: ...


class Devices(Protocol):
    """What the batcher needs of the model manager: a card's model, its device held for the block."""

    def use(self, card: str, report: Callable[[str], None] | None = None) -> AbstractContextManager[Any]: ...


@dataclass(eq=False)
class _Member:
    """One call in a queue: its item, its progress, and what became of it."""

    item: Any
    progress: ProgressFn | None
    wake: threading.Event = field(default_factory=threading.Event)  # done, or its turn to go for the device
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    batch: int = 0  # items in the call that made its result


class _AllCancelled(Exception):
    """Every member of a running batch was cancelled: the pipeline call stops."""


class Batcher:
    """Per Orchestrator: the queues of calls waiting for a device, by card and settings.

    ``limit(card)`` is the card's ``max_batch`` (1: one call at a time, as without batching); ``wait_s`` how long
    the call that gets the device may wait for the members of its group's last batch to come back (0: never).
    """

    def __init__(self, devices: Devices, limit: Callable[[str], int], wait_s: float = 0.0):
        self._devices = devices
        self._limit = limit
        self.wait_s = wait_s
        self._changed = threading.Condition()  # guards the queues; notified when a call joins one
        self._queues: dict[Key, list[_Member]] = {}
        self._ended: dict[Key, tuple[float, int]] = {}  # each group's last batch: when it ended, its size
        self._arrived: Counter[Key] = Counter()  # calls that joined each group since its last batch ended
        self.sizes: Counter[int] = Counter()  # batches run so far, by size

    def run(
        self,
        card: str,
        item: Any,
        settings: Mapping[str, Any],
        progress: ProgressFn | None = None,
        report: Callable[[str], None] | None = None,
    ) -> tuple[Any, int]:
        """This item's result, made with any calls of ``card`` with the same ``settings`` that wait for the device
        meanwhile; and how many items that pipeline call made. ``report`` hears what loading the model says (when
        this call is the one that goes for the device); ``progress`` every step, from whichever thread runs it."""
        key: Key = (card, tuple(sorted(settings.items())))
        member = _Member(item, progress)
        with self._changed:
            queue = self._queues.setdefault(key, [])
            queue.append(member)
            self._arrived[key] += 1
            if queue[0] is member:
                member.wake.set()
            self._changed.notify_all()
        try:
            member.wake.wait()
            if not member.done:
                self._lead(key, member, dict(settings), report)
        except BaseException:
            self._leave(key, member)
            raise
        if member.error is not None:
            raise member.error
        return member.result, member.batch

    def waiting(self, card: str | None = None) -> int:
        """Calls queued now (of ``card``, or of every card), the running batches' members not counted."""
        with self._changed:
            return sum(len(q) for (name, _), q in self._queues.items() if card in (None, name))

    # -- the call that gets the device ------------------------------------------------------------
    def _lead(
        self, key: Key, member: _Member, settings: dict[str, Any], report: Callable[[str], None] | None
    ) -> None:
        with self._devices.use(key[0], report) as model:
            batch = self._take(key, member, model)
            try:
                self._run(key[0], model, batch, settings)
            except BaseException as exc:  # KeyboardInterrupt and the like: every member learns of it
                for other in batch:
                    if other.result is None and other.error is None:
                        other.error = exc
                raise
            finally:
                with self._changed:  # before its members can come back
                    self._ended[key], self._arrived[key] = (time.monotonic(), len(batch)), 0
                for other in batch:
                    other.done = True
                    other.wake.set()

    def _take(self, key: Key, member: _Member, model: Batchable) -> list[_Member]:
        """The members of the next batch, oldest first (``member``, the head of the queue, among them)."""
        limit = max(1, int(self._limit(key[0])))
        with self._changed:
            queue = self._queues[key]
            if self.wait_s > 0:  # the last batch's members may be on their way back with their next calls
                expected = min(limit, len(queue) + self._returning(key))
                deadline = time.monotonic() + self.wait_s
                while len(queue) < expected and (left := deadline - time.monotonic()) > 0:
                    self._changed.wait(left)
            size = model.batch_size(len(queue), limit)
            batch, queue[:size] = queue[:size], []
            if queue:
                queue[0].wake.set()  # the oldest left over goes for the device next
            else:
                del self._queues[key]
            self.sizes[size] += 1
        assert batch[0] is member
        return batch

    def _returning(self, key: Key) -> int:
        """Members of the group's last batch not back yet, if it ended lately (callers making calls in a row)."""
        ended = self._ended.get(key)
        if ended is None or time.monotonic() - ended[0] > RETURN_HORIZON_S:
            return 0
        return max(0, ended[1] - self._arrived[key])

    def _leave(self, key: Key, member: _Member) -> None:
        """A call that stops before its batch ran (its model failed to load, an interrupt): out of the queue, and
        the next in line goes for the device if it was the one going."""
        with self._changed:
            queue = self._queues.get(key, [])
            if member not in queue:
                return
            first = queue[0] is member
            queue.remove(member)
            if not queue:
                del self._queues[key]
            elif first:
                queue[0].wake.set()

    def _run(self, card: str, model: Batchable, members: list[_Member], settings: dict[str, Any]) -> None:
        """Run the members' items as one call; on failure, each half again (the error of a single call is its own)."""
        live = [m for m in members if m.error is None]
        if not live:
            return
        try:
            results = model.generate_batch([m.item for m in live], progress=_fan_out(live), **settings)
            if len(results) != len(live):
                raise RuntimeError(f"{card} made {len(results)} results for {len(live)} items")
        except Exception as exc:
            live = [m for m in live if m.error is None]  # a cancelled member keeps its own reason
            if len(live) <= 1:
                for m in live:
                    m.error = exc
                return
            log.warning("a batch of %d %s calls failed (%s: %s); running it again in halves", len(live), card,
                        type(exc).__name__, str(exc)[:200])  # fmt: skip
        else:
            for m, result in zip(live, results):
                if m.error is None:
                    m.result, m.batch = result, len(live)
            if len(live) > 1:
                log.debug("ran %d %s calls as one batch", len(live), card)
            return
        half = len(live) // 2  # out of the except block: the failed call's tensors are freed first
        self._run(card, model, live[:half], settings)
        self._run(card, model, live[half:], settings)


def _fan_out(members: list[_Member]) -> ProgressFn:
    """One step report to every member; a member whose report raises is cancelled, and once all are the call
    stops."""

    def progress(step: int, total: int) -> None:
        for m in members:
            if m.progress is not None and m.error is None:
                try:
                    m.progress(step, total)
                except Exception as exc:  # its caller gave up: only this member stops
                    m.error = exc
        if all(m.error is not None for m in members):
            raise _AllCancelled()

    return progress
