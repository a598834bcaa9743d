"""The compile helper's GPU memory inside a VRAM budget: what the compiler asks of the budget's keeper.

Torch's allocator cannot see another process's memory, so under a CUDA budget (``--max-vram``) the compiler
reserves the helper's share (``helper_need_mb``) with the budget's keeper (the model manager) before the helper
starts on a job. The keeper evicts models for it, or says not now (the job waits for a later call), or takes it
back later for a call (``reclaim``: the helper is stopped and that job waits too). Only a budget that could never
hold the helper beside its largest call has the job compiled in the serving process instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from .helper import helper_need_mb

log = logging.getLogger(__name__)


class HelperMemoryBudget(Protocol):
    """A VRAM budget that can keep memory for the compile helper (implemented by the model manager)."""

    def fits_beside_largest_call(self, device: str, mb: int) -> bool:
        """Whether the device's budget could ever hold ``mb`` beside the largest call of a card on it."""
        ...

    def reserve_for_helper(self, device: str, mb: int, reclaim: Callable[[], None]) -> bool:
        """Keep ``mb`` for the helper (evicting models for it), or False when it does not fit now; the keeper
        calls ``reclaim()`` when a call needs that memory back."""
        ...

    def release_helper_reservation(self, device: str) -> None:
        """The helper has stopped: its memory is the budget's again."""
        ...


class HelperReservations:
    """The compiler's side: what it has reserved on each device, and whether the job at hand must wait."""

    def __init__(self, budget: HelperMemoryBudget | None, stop_helper: Callable[[], None]):
        self.budget = budget  # None: no budget to keep to (always room)
        self.stop_helper = stop_helper
        self.held: dict[str, int] = {}  # device -> MB reserved for the helper now
        self.job_must_wait = False  # the job at hand waits for a later call (not compiled here meanwhile)

    def reserve(self, device: str, module: Any) -> bool:
        """Room on the device for the helper to compile ``module``; False: compile it here, or, with
        ``job_must_wait`` set, later."""
        if self.budget is None:
            return True
        need = helper_need_mb(module)
        if self.held.get(device, 0) >= need:
            return True
        name = type(module).__name__
        if not self.budget.fits_beside_largest_call(device, need):
            log.info("%s's budget cannot hold the compile helper (%d MB) beside its largest call; compiling %s "
                     "here", device, need, name)  # fmt: skip
            return False
        if not self.budget.reserve_for_helper(device, need, lambda: self._reclaimed(device)):
            log.info("no room in %s's budget for the compile helper (%d MB) now; %s's compile waits for a later "
                     "call", device, need, name)  # fmt: skip
            self.job_must_wait = True
            return False
        self.held[device] = need
        return True

    def _reclaimed(self, device: str) -> None:
        """The budget's keeper wants the memory back for a call: the job waits for a later one."""
        self.held.pop(device, None)
        self.job_must_wait = True
        self.stop_helper()

    def release_all(self) -> None:
        """The helper stopped: give every reservation back."""
        for device in list(self.held):
            self.held.pop(device, None)
            if self.budget is not None:
                self.budget.release_helper_reservation(device)
