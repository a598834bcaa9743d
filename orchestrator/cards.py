"""Model cards: the registry in ``model_cards.yaml``, read and validated into frozen dataclasses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from foundation_models.family import family_module

from .errors import CardError

# --int8-weights (foundation_models/int8_weights.py): the diffusion networks' families, and their int8 size
# as a share of the fp16 one (an SD1.5 UNet: 1,653 MB -> 833 MB, measured on the H200).
INT8_SIZE = 0.51

DTYPES = ("float16", "bfloat16", "float32")
VRAM_SOURCES = ("estimated", "measured")
TOOL_NAME = re.compile(r"^[a-z0-9_]{1,64}$")
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class ComponentGroup:
    """Components loaded once per device and shared by every card that names them."""

    name: str
    family: str
    checkpoint: str
    dtype: str
    components: Mapping[str, int]  # component -> vram_mb
    vram_source: str = "estimated"


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    description: str
    dtype: str
    vram_mb: int
    vram_source: str
    tools: tuple[str, ...]
    working_mb: int = 0  # memory one call takes on top of the weights (activations, graph pools); 0: unknown
    checkpoints: Mapping[str, str] = field(default_factory=dict)
    shares: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CardSet:
    cards: Mapping[str, ModelCard]
    groups: Mapping[str, ComponentGroup]
    tiny_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ModelCard:
        return self.cards[name]

    def __contains__(self, name: object) -> bool:
        return name in self.cards

    def names(self) -> list[str]:
        return list(self.cards)

    def shared_mb(self, card: ModelCard) -> dict[tuple[str, str], int]:
        """(group, component) -> MB for every shared component the card uses."""
        return {
            (group, comp): self.groups[group].components[comp]
            for group, comps in card.shares.items()
            for comp in comps
        }

    def with_int8_diffusion(self) -> CardSet:
        """The same cards with the diffusion networks counted at their int8 size (``--int8-weights``)."""
        groups = dict(self.groups)
        if "sd15_base" in groups and "unet" in groups["sd15_base"].components:
            base = groups["sd15_base"]
            components = {**base.components, "unet": round(base.components["unet"] * INT8_SIZE)}
            groups["sd15_base"] = replace(base, components=components)
        cards = {
            name: replace(card, vram_mb=round(card.vram_mb * INT8_SIZE))
            if family_module(card.family).fast.int8
            else card
            for name, card in self.cards.items()
        }
        return replace(self, cards=cards, groups=groups)

    def with_dependencies(self, names: list[str]) -> list[str]:
        """The names plus every card they depend on, transitively; dependencies come first."""
        ordered: list[str] = []

        def visit(name: str) -> None:
            if name in ordered:
                return
            for dep in self.cards[name].depends_on:
                visit(dep)
            ordered.append(name)

        for name in names:
            visit(name)
        return ordered


def default_cards_path() -> Path:
    return Path(str(resources.files("orchestrator") / "data" / "model_cards.yaml"))


def load_cards(path: str | Path | None = None) -> CardSet:
    path = Path(path) if path else default_cards_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CardError(f"{path} is not valid YAML: {exc}") from exc
    return parse_cards(raw, source=str(path))


def parse_cards(raw: Any, source: str = "model_cards.yaml") -> CardSet:
    if not isinstance(raw, dict) or not isinstance(raw.get("cards"), dict):
        raise CardError(f"{source} must be a mapping with a 'cards' section.")
    groups = {name: _parse_group(name, spec) for name, spec in (raw.get("groups") or {}).items()}
    cards = {name: _parse_card(name, spec, groups) for name, spec in raw["cards"].items()}
    for card in cards.values():
        for dep in card.depends_on:
            if dep not in cards:
                raise CardError(f"Card {card.name}: field 'depends_on' names unknown card '{dep}'.")
    _check_no_cycles(cards)
    _check_unique_tools(cards)
    return CardSet(cards=cards, groups=groups, tiny_overrides=dict(raw.get("tiny_overrides") or {}))


def _parse_group(name: str, spec: Any) -> ComponentGroup:
    where = f"Group {name}"
    spec = _mapping(spec, where)
    components = _mapping(spec.get("components"), f"{where}: field 'components'")
    if not components:
        raise CardError(f"{where}: field 'components' must list at least one component.")
    for comp, mb in components.items():
        _non_negative_int(mb, f"{where}: field 'components.{comp}'")
    return ComponentGroup(
        name=name,
        family=_str(spec, "family", where),
        checkpoint=_repo_id(spec.get("checkpoint"), f"{where}: field 'checkpoint'"),
        dtype=_choice(spec, "dtype", DTYPES, where),
        components=dict(components),
        vram_source=_choice(spec, "vram_source", VRAM_SOURCES, where, "estimated"),
    )


def _parse_card(name: str, spec: Any, groups: Mapping[str, ComponentGroup]) -> ModelCard:
    where = f"Card {name}"
    spec = _mapping(spec, where)
    known = {
        "description", "family", "checkpoints", "dtype", "vram_mb", "vram_source", "working_mb",
        "shares", "depends_on", "tools", "options",
    }  # fmt: skip
    unknown = sorted(set(spec) - known)
    if unknown:
        raise CardError(f"{where}: unknown field '{unknown[0]}' (known: {', '.join(sorted(known))}).")
    checkpoints = _mapping(spec.get("checkpoints") or {}, f"{where}: field 'checkpoints'")
    for role, repo in checkpoints.items():
        _repo_id(repo, f"{where}: field 'checkpoints.{role}'")
    tools = _str_list(spec.get("tools"), f"{where}: field 'tools'")
    for tool in tools:
        if not TOOL_NAME.fullmatch(tool):
            raise CardError(f"{where}: field 'tools' has '{tool}', which does not match ^[a-z0-9_]{{1,64}}$.")
    return ModelCard(
        name=name,
        family=_str(spec, "family", where),
        description=str(spec.get("description", "")),
        dtype=_choice(spec, "dtype", DTYPES, where),
        vram_mb=_non_negative_int(spec.get("vram_mb"), f"{where}: field 'vram_mb'"),
        vram_source=_choice(spec, "vram_source", VRAM_SOURCES, where, "estimated"),
        tools=tuple(tools),
        working_mb=_non_negative_int(spec.get("working_mb", 0), f"{where}: field 'working_mb'"),
        checkpoints=dict(checkpoints),
        shares=_parse_shares(spec.get("shares"), groups, where),
        depends_on=tuple(_str_list(spec.get("depends_on") or [], f"{where}: field 'depends_on'")),
        options=dict(_mapping(spec.get("options") or {}, f"{where}: field 'options'")),
    )


def _parse_shares(raw: Any, groups: Mapping[str, ComponentGroup], where: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if isinstance(raw, list):
        raw = {group: None for group in raw}
    raw = _mapping(raw, f"{where}: field 'shares'")
    shares: dict[str, tuple[str, ...]] = {}
    for group, comps in raw.items():
        if group not in groups:
            raise CardError(
                f"{where}: field 'shares' names unknown group '{group}' (known: {', '.join(groups)})."
            )
        available = groups[group].components
        comps = list(available) if comps is None else _str_list(comps, f"{where}: field 'shares.{group}'")
        for comp in comps:
            if comp not in available:
                raise CardError(
                    f"{where}: field 'shares.{group}' names unknown component '{comp}' "
                    f"(group {group} has: {', '.join(available)})."
                )
        shares[group] = tuple(comps)
    return shares


def _check_no_cycles(cards: Mapping[str, ModelCard]) -> None:
    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise CardError(
                f"Card {path[0]}: field 'depends_on' forms a cycle: {' -> '.join((*path, name))}."
            )
        for dep in cards[name].depends_on:
            visit(dep, (*path, name))

    for name in cards:
        visit(name, ())


def _check_unique_tools(cards: Mapping[str, ModelCard]) -> None:
    owner: dict[str, str] = {}
    for card in cards.values():
        for tool in card.tools:
            if tool in owner:
                raise CardError(
                    f"Card {card.name}: field 'tools' repeats '{tool}', already exposed by {owner[tool]}."
                )
            owner[tool] = card.name


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise CardError(f"{where} must be a mapping, got {type(value).__name__}.")
    return value


def _str(spec: dict, key: str, where: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value:
        raise CardError(f"{where}: field '{key}' is required and must be a non-empty string.")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CardError(f"{where} must be a list of strings.")
    return value


def _choice(spec: dict, key: str, choices: tuple[str, ...], where: str, default: str | None = None) -> str:
    value = spec.get(key, default)
    if value not in choices:
        raise CardError(f"{where}: field '{key}' is {value!r}; use one of {', '.join(choices)}.")
    return value


def _non_negative_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CardError(f"{where} must be a whole number of MB (0 or more), got {value!r}.")
    return value


def _repo_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not REPO_ID.fullmatch(value):
        raise CardError(f"{where} must be a Hugging Face repo id like 'org/name', got {value!r}.")
    return value
