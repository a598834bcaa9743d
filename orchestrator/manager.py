"""The model manager: loads each model on first use, once, shares component groups, keeps to budgets.

Each device has one re-entrant lock held while a model on it loads or runs, so a model loads exactly
once even when many sessions ask at the same moment, and a pipeline never runs twice at once. When a
budget would be exceeded, the least recently used models on that device are offloaded to CPU memory (or
dropped, on the CPU itself); a model offloaded comes back with ``.to(device)`` on its next use. A budget holds
the whole of what the models take: the weights, room for the call's working memory (the card's ``working_mb``)
and, on CUDA, what the allocator shows beyond the weights (graph pools, cached blocks) before each call.
On CUDA the budget is also a hard cap: torch's allocator in this process never takes more than the budget
(plus what is kept for an hf brain, less what the compile helper holds), so a call that would exceed it runs
out of memory, and the session evicts the other models and tries once more. The compile helper's memory (a
process of our own) is reserved through ``reserve_for_helper`` while it runs: the manager is the fast path's
``HelperMemoryBudget``.

A family (``foundation_models/<family>.py``, its ``FAMILY`` declaration: ``foundation_models/family.py``)
provides ``load(ctx) -> model`` and, for families that own component groups, ``load_component(ctx, group,
component) -> module``. A model that owns weights besides shared components has ``to(device)`` that moves
those (and only those).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation_models.family import Family, family_module
from foundation_models.fastpath import building_models

from .cards import CardSet, ComponentGroup, ModelCard
from .device_memory import cap_allocator, device_memory_mb, empty_cache, move
from .placement import Plan, working_set
from .weights import WeightResolver

if TYPE_CHECKING:
    from foundation_models.fastpath import FastPath

log = logging.getLogger(__name__)

NOT_LOADED, LOADING, RESIDENT, OFFLOADED = "not loaded", "loading", "resident", "offloaded"


@dataclass
class _Entry:
    """One unit of memory on a device: a card's own weights, or one shared component."""

    key: str  # card name, or "group/component"
    device: str
    mb: int
    state: str = NOT_LOADED
    obj: Any = None
    last_used: float = 0.0
    in_use: int = 0
    loads: int = 0
    shared: tuple[str, ...] = ()  # for cards: keys of the shared components they use
    working: int = 0  # for cards: MB a call takes on top of the weights


@dataclass(frozen=True)
class ModelStatus:
    card: str
    device: str
    state: str
    vram_mb: int  # own + shared components (shared ones count for each card that uses them)
    budget_mb: int | None
    loads: int
    fast_fallback: str | None = None  # why its fast path fell back to the plain call, if it did
    compile_state: str | None = None  # "compiled", "compiling", "eager"; None: not loaded or compiles nothing


@dataclass
class LoadContext:
    """What a family's ``load`` may use: its card, device, dtype, checkpoints, shared components and the
    Orchestrator's fast path (``foundation_models.family.LoadContext`` is the contract)."""

    card: ModelCard | None
    device: str
    dtype_name: str
    manager: ModelManager
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fastpath(self) -> FastPath:
        """The fast path of the Orchestrator this model loads for (graphs, the background compiler)."""
        return self.manager.fastpath

    @property
    def dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)

    def checkpoint(self, role: str, files: list[str] | None = None) -> Path:
        assert self.card is not None
        return self.manager.resolver.resolve(self.card.checkpoints[role], files)

    def group_checkpoint(self, group: str, files: list[str] | None = None) -> Path:
        return self.manager.resolver.resolve(self.manager.cards.groups[group].checkpoint, files)

    def component(self, group: str, name: str) -> Any:
        """A shared component on this device, loaded once for every card that uses it."""
        return self.manager._component(group, name, self.device)


class ModelManager:
    def __init__(
        self,
        cards: CardSet,
        plan: Plan,
        resolver: WeightResolver,
        *,
        families: Mapping[str, Family] | None = None,
        options: Callable[[ModelCard | None], Mapping[str, Any]] | None = None,
        memory_probe: Callable[[str], float | None] | None = None,
        allocator_cap: Callable[[str, int], None] | None = None,
        fastpath: FastPath | None = None,
    ):
        self.cards = cards
        self.fastpath = fastpath or _default_fastpath()  # the Orchestrator gives its own
        # MB the process holds on a device (None: unknown); a budget counts it where it exceeds the weights
        self.memory_probe = memory_probe or device_memory_mb
        self.allocator_cap = allocator_cap or cap_allocator  # (device, MB): torch's allocator takes no more
        self._caps: dict[str, int] = {}
        # device -> (MB, reclaim): memory the compile helper (a process of ours) holds there, and how to get it back
        self._helper_reserved: dict[str, tuple[int, Callable[[], None]]] = {}
        self.plan = plan
        self.resolver = resolver
        self._families = dict(families or {})
        self._options = options or (lambda card: card.options if card else {})
        self._guard = threading.Lock()
        self._device_locks = {device: threading.RLock() for device in plan.devices}
        self._entries: dict[str, _Entry] = {}
        for name, placement in plan.placements.items():
            card = cards[name]
            shared = tuple(f"{g}/{c}" for g, comps in card.shares.items() for c in comps)
            self._entries[name] = _Entry(name, placement.device, card.vram_mb, shared=shared,
                                         working=card.working_mb)  # fmt: skip
            for (group, comp), mb in cards.shared_mb(card).items():
                key = self._component_key(group, comp, placement.device)
                self._entries.setdefault(key, _Entry(key, placement.device, mb))

    # -- public -----------------------------------------------------------------------------------
    @contextmanager
    def use(self, name: str, report: Callable[[str], None] | None = None) -> Iterator[Any]:
        """``with manager.use("Text2Image") as model:`` — loaded (or swapped in) and locked for this use."""
        if name not in self._entries:
            raise KeyError(f"{name} is not loaded by this orchestrator (its --load spec)")
        entry = self._entries[name]
        with self._device_locks[entry.device]:
            model = self._ensure_resident(entry, report)
            entry.in_use += 1
            try:
                yield model
            finally:
                entry.in_use -= 1
                entry.last_used = time.monotonic()

    def status(self) -> list[ModelStatus]:
        out = []
        for name in self.plan.placements:
            entry = self._entries[name]
            mb = entry.mb + sum(self._entries[self._key_on(k, entry.device)].mb for k in entry.shared)
            fallback = getattr(entry.obj, "fast_fallback", None) if entry.obj is not None else None
            compiled = getattr(entry.obj, "compile_state", None) if entry.obj is not None else None
            out.append(
                ModelStatus(
                    name,
                    entry.device,
                    entry.state,
                    mb,
                    self.plan.budget_of(entry.device),
                    entry.loads,
                    fallback if isinstance(fallback, str) else None,
                    compiled if isinstance(compiled, str) else None,
                )  # fmt: skip
            )
        return out

    def resident_mb(self, device: str) -> int:
        return sum(e.mb for e in self._entries.values() if e.device == device and e.state == RESIDENT)

    def free_memory(self, devices: list[str], keep: list[str] = ()) -> None:
        """Offload every model on these devices but ``keep``, take back the compile helper's memory and return
        cached blocks (after an OOM)."""
        for device in devices:
            self._reclaim_helper_memory(device)
            with self._device_locks[device]:
                for entry in self._lru(device):
                    if entry.key not in keep:
                        self._evict(entry)
        empty_cache()

    def devices_of(self, name: str) -> list[str]:
        """Devices a card touches when it runs (its own and its dependencies')."""
        return sorted({self.plan.device_of(n) for n in self.cards.with_dependencies([name])})

    # -- loading ----------------------------------------------------------------------------------
    def _ensure_resident(self, entry: _Entry, report: Callable[[str], None] | None) -> Any:
        if entry.state == RESIDENT:
            self._make_room(entry)  # for this call's working memory
            for key in entry.shared:
                self._ensure_component(self._entries[self._key_on(key, entry.device)])
            return entry.obj
        self._make_room(entry)
        card = self.cards[entry.key]
        if entry.state == OFFLOADED:
            if report:
                report(f"moving {entry.key} back to {entry.device}")
            for key in entry.shared:
                self._ensure_component(self._entries[self._key_on(key, entry.device)])
            move(entry.obj, entry.device)
        else:
            if report:
                report(f"loading {entry.key} on {entry.device}")
            entry.state = LOADING
            started = time.perf_counter()
            self.fastpath.prefetch_compiled(entry.device)  # the compiled-code file loads beside the model
            try:
                with building_models():
                    entry.obj = self._family(card.family).load(self._context(card, entry.device))
            except BaseException:
                entry.state = NOT_LOADED
                raise
            entry.loads += 1
            log.info("loaded %s on %s in %.1f s", entry.key, entry.device, time.perf_counter() - started)
        entry.state = RESIDENT
        entry.last_used = time.monotonic()
        return entry.obj

    def _component(self, group: str, name: str, device: str) -> Any:
        key = self._component_key(group, name, device)
        if key not in self._entries:  # a family asking for a component its card did not declare
            raise KeyError(f"component {group}/{name} is not declared in the card's 'shares'")
        entry = self._entries[key]
        return self._ensure_component(entry)

    def _ensure_component(self, entry: _Entry) -> Any:
        if entry.state == OFFLOADED:
            move(entry.obj, entry.device)
        elif entry.state == NOT_LOADED:
            group_name, comp = entry.key.split("@")[0].split("/")
            group = self.cards.groups[group_name]
            entry.state = LOADING
            try:
                with building_models():
                    load_component = self._family(group.family).load_component
                    if load_component is None:
                        raise TypeError(
                            f"the {group.family} family declares no load_component for {group.name}"
                        )
                    entry.obj = load_component(self._context(None, entry.device, group), group, comp)
            except BaseException:
                entry.state = NOT_LOADED
                raise
            entry.loads += 1
        entry.state = RESIDENT
        entry.last_used = time.monotonic()
        return entry.obj

    def _context(
        self, card: ModelCard | None, device: str, group: ComponentGroup | None = None
    ) -> LoadContext:
        dtype = "float32" if device == "cpu" else (card.dtype if card else group.dtype)
        options = self._options(card)  # card None: a shared component; the options every card gets
        return LoadContext(card, device, dtype, self, options)

    def _family(self, family: str) -> Family:
        if family not in self._families:
            self._families[family] = family_module(family)
        return self._families[family]

    def family_of(self, card: str) -> Family:
        """The family declaration of a card (what loads it, what warm-up and the downloader need to know)."""
        return self._family(self.cards[card].family)

    # -- budgets: the fast path's HelperMemoryBudget ---------------------------------------------
    def reserve_for_helper(self, device: str, mb: int, reclaim: Callable[[], None]) -> bool:
        """Keep ``mb`` of a budgeted device for the compile helper (another process of ours), evicting least
        recently used models for it; False when the budget cannot hold it beside the largest call of a card on
        the device, or beside what is in use now. ``reclaim()`` stops the helper when a call needs the memory
        after all."""
        capacity = self.plan.budget_of(device)
        if capacity is None or device not in self._device_locks:
            return True
        if not self.fits_beside_largest_call(device, mb):
            return False
        with self._device_locks[device]:
            empty_cache()
            if not self._evict_until(device, capacity, mb):  # models in use, or memory beyond the weights
                return False
            self._helper_reserved[device] = (mb, reclaim)
            self._cap(device)
        return True

    def fits_beside_largest_call(self, device: str, mb: int) -> bool:
        """Whether the device's budget holds ``mb`` beside the largest call of a card on it (ever, not now)."""
        capacity = self.plan.budget_of(device)
        if capacity is None or device not in self._device_locks:
            return True
        cards = [name for name, placement in self.plan.placements.items() if placement.device == device]
        return mb + max((working_set(self.cards, name) for name in cards), default=0) <= capacity

    def release_helper_reservation(self, device: str) -> None:
        """That memory is free again (the helper stopped)."""
        if self._helper_reserved.pop(device, None) is not None:
            self._cap(device)

    def _reclaim_helper_memory(self, device: str) -> None:
        """Stop the compile helper and take its reserved memory back for a call."""
        held = self._helper_reserved.pop(device, None)
        if held is not None:
            log.info("stopping the compile helper: a call on %s needs its %d MB", device, held[0])
            held[1]()
            self._cap(device)

    def _make_room(self, entry: _Entry) -> None:
        """Evict the least recently used models until this card, its shared components and its working memory
        fit in the budget beside what the device holds; take back the compile helper's memory if still short."""
        self._cap(entry.device)
        capacity = self.plan.budget_of(entry.device)
        if capacity is None or self._in_use_mb(entry.device) + self._needed_mb(entry) <= capacity:
            return
        empty_cache()  # blocks cached by earlier calls count as held until returned
        if self._evict_until(entry.device, capacity, self._needed_mb(entry), keep=entry):
            return
        if entry.device in self._helper_reserved:
            self._reclaim_helper_memory(entry.device)
            if self._in_use_mb(entry.device) + self._needed_mb(entry) <= capacity:
                return
        in_use, needed = self._in_use_mb(entry.device), self._needed_mb(entry)
        if in_use + needed > capacity:
            log.warning("%s needs %d MB on %s (%d MB of it to run) beside %d MB held; over its %d MB budget even "
                        "after evicting", entry.key, needed, entry.device, entry.working, in_use, capacity)  # fmt: skip

    def _evict_until(self, device: str, capacity: int, needed: int, keep: _Entry | None = None) -> bool:
        """Evict least recently used models until ``needed`` MB more fit; whether they do."""
        for victim in self._lru(device, keep=keep):
            if self._in_use_mb(device) + needed <= capacity:
                return True
            self._evict(victim)
        return self._in_use_mb(device) + needed <= capacity

    def _cap(self, device: str) -> None:
        """Keep torch's allocator on a budgeted CUDA device to the budget (see the module's docstring)."""
        load = self.plan.devices.get(device)
        if load is None or load.budget_mb is None or not device.startswith("cuda"):
            return
        mb = load.budget_mb + load.device.reserved_mb - self._helper_reserved.get(device, (0, None))[0]
        if self._caps.get(device) != mb:
            self._caps[device] = mb
            self.allocator_cap(device, mb)

    def _needed_mb(self, entry: _Entry) -> int:
        """MB a call of this card adds: its weights and shared components not resident yet, its working memory."""
        shared = (self._entries[self._key_on(k, entry.device)] for k in entry.shared)
        own = 0 if entry.state == RESIDENT else entry.mb
        return own + sum(e.mb for e in shared if e.state != RESIDENT) + entry.working

    def _in_use_mb(self, device: str) -> float:
        """MB held on the device: the models' resident weights, or what the allocator shows (less any memory
        kept for an hf brain) where that is more, and what the compile helper holds there."""
        counted = self.resident_mb(device)
        measured = self.memory_probe(device)
        outside = self._helper_reserved.get(device, (0, None))[0]
        if measured is None:
            return counted + outside
        load = self.plan.devices.get(device)
        brain = load.device.reserved_mb if load is not None else 0
        return max(counted, measured - brain) + outside

    def _lru(self, device: str, keep: _Entry | None = None) -> list[_Entry]:
        """Resident cards on this device that may be evicted, least recently used first."""
        cards = [
            e for name, e in self._entries.items()
            if name in self.plan.placements and e.device == device and e.state == RESIDENT
            and e.in_use == 0 and e is not keep
        ]  # fmt: skip
        return sorted(cards, key=lambda e: e.last_used)

    def _evict(self, entry: _Entry) -> None:
        offload = entry.device != "cpu"
        log.info("%s %s from %s", "offloading" if offload else "unloading", entry.key, entry.device)
        if offload:
            move(entry.obj, "cpu")
            entry.state = OFFLOADED
        else:
            entry.obj, entry.state = None, NOT_LOADED
        still_used = {
            self._key_on(k, e.device)
            for e in self._entries.values()
            if e.state == RESIDENT and e.device == entry.device
            for k in e.shared
        }
        for key in entry.shared:
            comp = self._entries[self._key_on(key, entry.device)]
            if comp.key in still_used or comp.state != RESIDENT:
                continue
            if offload:
                move(comp.obj, "cpu")
                comp.state = OFFLOADED
            else:
                comp.obj, comp.state = None, NOT_LOADED
        empty_cache()

    @staticmethod
    def _component_key(group: str, comp: str, device: str) -> str:
        return f"{group}/{comp}@{device}"

    @staticmethod
    def _key_on(shared_key: str, device: str) -> str:
        return f"{shared_key}@{device}"


def _default_fastpath() -> FastPath:
    """A fast path of the manager's own, for a manager built without an Orchestrator."""
    from foundation_models.fastpath import FastPath

    return FastPath()
