"""Placement: a pure function of (cards, load spec, devices, budgets) -> plan, or one clear error.

Shared component groups count once per device. Without a budget every model on a device must fit in its
free memory at once, with room for one call's working memory (the largest of theirs: a device runs one model
at a time); with a budget (``--max-vram cuda:0=8GiB``) each model and its working memory must fit on their
own, and the model manager takes turns, evicting the least recently used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .cards import CardSet
from .devices import Device
from .errors import PlacementError, SpecError
from .spec import LoadItem

SharedKey = tuple[str, str]  # (group, component)


@dataclass(frozen=True)
class Placement:
    card: str
    device: str
    requested: str  # what --load asked for: auto, cpu, mps or cuda:N


@dataclass
class DeviceLoad:
    device: Device
    budget_mb: int | None = None
    cards: list[str] = field(default_factory=list)
    own_mb: dict[str, int] = field(default_factory=dict)
    shared_mb: dict[SharedKey, int] = field(default_factory=dict)
    working: dict[str, int] = field(default_factory=dict)  # card -> its working memory

    @property
    def total_mb(self) -> int:
        return sum(self.own_mb.values()) + sum(self.shared_mb.values())

    @property
    def capacity_mb(self) -> int | None:
        """What may be resident at once: the budget, the free memory, or None (not checked)."""
        limits = [m for m in (self.budget_mb, self.device.available_mb) if m is not None]
        return min(limits) if limits else None

    @property
    def working_mb(self) -> int:
        """Room kept for the working memory of one call: the largest of these cards' (one runs at a time)."""
        return max((self.working.values()), default=0)

    @property
    def takes_turns(self) -> bool:
        """True when the models on this device exceed its budget and will be swapped (LRU)."""
        return self.capacity_mb is not None and self.total_mb + self.working_mb > self.capacity_mb


@dataclass(frozen=True)
class Plan:
    placements: Mapping[str, Placement]
    devices: Mapping[str, DeviceLoad]

    def device_of(self, card: str) -> str:
        return self.placements[card].device

    def budget_of(self, device: str) -> int | None:
        load = self.devices.get(device)
        return load.capacity_mb if load else None


def make_plan(
    cards: CardSet,
    items: Sequence[LoadItem],
    devices: Sequence[Device],
    budgets: Mapping[str, int] | None = None,
) -> Plan:
    budgets = dict(budgets or {})
    by_name = {d.name: d for d in devices}
    for name in budgets:
        if name not in by_name:
            raise SpecError(f"--max-vram names {name}, which this machine does not have ({_have(devices)}).")
    loads = {d.name: DeviceLoad(d, budgets.get(d.name)) for d in devices}
    requested = _with_dependencies(cards, items)
    for name, device in requested:
        if device not in ("auto", "cpu") and device not in by_name:
            raise SpecError(_missing_device(name, device, devices))
    placements: dict[str, Placement] = {}
    for name, device in requested:
        target = _auto_device(cards, name, loads) if device == "auto" else device
        _add(cards, loads[target], name)
        placements[name] = Placement(name, target, device)
    for load in loads.values():
        _check_fits(cards, load)
    return Plan(placements, {name: load for name, load in loads.items() if load.cards})


def _with_dependencies(cards: CardSet, items: Sequence[LoadItem]) -> list[tuple[str, str]]:
    """(card, device) in load order: dependencies not listed in --load follow the card that needs them."""
    explicit = {item.name: item.device for item in items}
    out: dict[str, str] = {}
    for item in items:
        for name in cards.with_dependencies([item.name]):
            if name not in out:
                out[name] = explicit.get(name, item.device)
    return list(out.items())


def _cost(cards: CardSet, load: DeviceLoad, name: str) -> int:
    """MB that putting this card on this device adds (shared components already there are free)."""
    card = cards[name]
    extra = {k: mb for k, mb in cards.shared_mb(card).items() if k not in load.shared_mb}
    return card.vram_mb + sum(extra.values())


def _add(cards: CardSet, load: DeviceLoad, name: str) -> None:
    load.cards.append(name)
    load.own_mb[name] = cards[name].vram_mb
    load.working[name] = cards[name].working_mb
    load.shared_mb.update(cards.shared_mb(cards[name]))


def _auto_device(cards: CardSet, name: str, loads: Mapping[str, DeviceLoad]) -> str:
    """The accelerator where the card adds least (its shared groups already there), then the one with the
    most room left; the CPU when no accelerator has room."""
    best, best_key = "cpu", None
    for device, load in loads.items():
        if not load.device.is_accelerator or load.capacity_mb is None:
            continue
        cost = _cost(cards, load, name)
        if load.budget_mb is not None:  # with a budget, models take turns: one card must fit on its own
            room = load.capacity_mb - working_set(cards, name)
        else:
            room = load.capacity_mb - load.total_mb - cost - max(load.working_mb, cards[name].working_mb)
        key = (cost, -room)
        if room >= 0 and (best_key is None or key < best_key):
            best, best_key = device, key
    return best


def working_set(cards: CardSet, name: str) -> int:
    """MB one card needs on its own while it runs: its weights, shared components and working memory."""
    card = cards[name]
    return card.vram_mb + sum(cards.shared_mb(card).values()) + card.working_mb


def _check_fits(cards: CardSet, load: DeviceLoad) -> None:
    capacity = load.capacity_mb
    if capacity is None:
        return
    name = load.device.name
    if load.budget_mb is not None:
        for card in load.cards:
            need = working_set(cards, card)
            if need > capacity:
                working = cards[card].working_mb
                to_run = f" plus {working:,} MB for a call to run" if working else ""
                raise PlacementError(
                    f"{card} needs {need - working:,} MB{to_run} on {name} but its budget allows {capacity:,} MB at once "
                    f"({_free(load)}); raise --max-vram {name}=…, or put it elsewhere (e.g. {card}_cpu)."
                )
        return
    used = DeviceLoad(load.device)
    for card in load.cards:
        cost = _cost(cards, used, card)
        working = max(used.working_mb, cards[card].working_mb)
        if used.total_mb + cost + working > capacity:
            left = capacity - used.total_mb
            after = f" after {', '.join(used.cards)}" if used.cards else ""
            to_run = f" plus {working:,} MB for a call to run" if working else ""
            raise PlacementError(
                f"{card} needs {cost:,} MB{to_run} on {name} but only {left:,} MB is free{after} ({_free(load)}); "
                f"put it on another device (e.g. {card}_cpu or {card}_auto) "
                f"or set a budget with --max-vram {name}=<size> so models take turns."
            )
        _add(cards, used, card)


def _free(load: DeviceLoad) -> str:
    d = load.device
    if d.free_mb is None:
        return "size unknown"
    kept = f", {d.reserved_mb:,} MB of it kept for {d.reserved_for}" if d.reserved_mb else ""
    return f"{d.free_mb:,} MB free of {d.total_mb:,} MB{kept}"


def _have(devices: Sequence[Device]) -> str:
    return ", ".join(d.name for d in devices)


def _missing_device(card: str, device: str, devices: Sequence[Device]) -> str:
    gpus = [d.name for d in devices if d.kind == "cuda"]
    if device.startswith("cuda"):
        if not gpus:
            return f"{card}_{device} asks for {device}, but no CUDA GPU is visible here; use {card}_cpu or {card}_auto."
        return (
            f"{card}_{device} asks for {device}, but this machine has {len(gpus)} GPU(s) ({', '.join(gpus)}); "
            f"use one of those, cpu or auto."
        )
    return f"{card}_{device} asks for {device}, which this machine does not have ({_have(devices)}); use cpu or auto."
