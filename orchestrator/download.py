"""Which files of which repositories the cards' loaders read: one rule set for the downloader, the
resolver (first use) and the readiness report.

A card needs its own ``checkpoints``, its shared groups' ``checkpoint`` and its dependencies'. What is
read from a repository depends on the family that loads it:

- ``pipeline`` (stable_diffusion, instruct_pix2pix): ``model_index.json`` and the unet, vae, text_encoder,
  tokenizer and scheduler folders; in each, the configs and ONE set of weights (the fp16 safetensors
  variant where the repository has one). No ``.ckpt``, no safety checker, no EMA or fp32 duplicates.
- ``diffusers`` (controlnet): the same rule for a single model folder at the repository root.
- ``transformers`` (blip, depth, segmentation, grounding, sam): configs, tokenizer and processor files,
  ``model.safetensors`` (``pytorch_model.bin`` only where there is no safetensors); no TF/Flax weights.
- ``files`` (detectors): exactly the ``.pth`` files the detector reads from lllyasviel/Annotators.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from foundation_models.family import Layout, family_module

from .cards import CardSet

Kind = Layout  # the family's declared layout (foundation_models.family.Files)
PIPELINE_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_EXTS = (".safetensors", ".bin")
WEIGHT_STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")
CONFIG_EXTS = (".json", ".txt", ".model", ".jinja")  # configs, tokenizers, processors
# model_index.json classes that hold no weights
NO_WEIGHTS = ("Tokenizer", "Scheduler", "Processor", "FeatureExtractor")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # a transformers repo has one
SHARD = re.compile(r"-\d{5}-of-\d{5}$")
INDEX = re.compile(r"(?P<stem>\w+)(?P<ext>\.safetensors|\.bin)\.index(?:\.(?P<variant>\w+))?\.json")


@dataclass(frozen=True)
class Need:
    """One repository and what the loaders read from it."""

    repo_id: str
    kind: Kind
    files: tuple[str, ...] = ()  # kind "files" only
    variant: str | None = None  # preferred weights variant (pipeline and diffusers: fp16)

    def merge(self, other: Need) -> Need:
        return replace(self, files=tuple(dict.fromkeys(self.files + other.files)))


def layout_of(family: str) -> Kind:
    """How the family's loader reads a repository, as its ``FAMILY`` declares (LookupError: no such family)."""
    return family_module(family).files.layout


def need_for(family: str, repo_id: str, files: Iterable[str] = ()) -> Need:
    kind = layout_of(family)
    if kind == "files":
        return Need(repo_id, kind, tuple(files))
    return Need(repo_id, kind, variant="fp16" if kind in ("pipeline", "diffusers") else None)


def card_needs(cards: CardSet, name: str, dependencies: bool = True) -> list[Need]:
    """What the card (and, by default, the cards it depends on) reads, one Need per repository."""
    needs: list[Need] = []
    for card_name in cards.with_dependencies([name]) if dependencies else [name]:
        card = cards[card_name]
        named = family_module(card.family).files.named(card.options.get("detector"))
        for repo in card.checkpoints.values():
            needs.append(need_for(card.family, repo, [named] if named else []))
        for group_name, components in card.shares.items():
            group = cards.groups[group_name]
            files = [f for f in map(family_module(group.family).files.named, components) if f]
            needs.append(need_for(group.family, group.checkpoint, files))
    return merge_needs(needs)


def merge_needs(needs: Iterable[Need]) -> list[Need]:
    merged: dict[str, Need] = {}
    for need in needs:
        merged[need.repo_id] = merged[need.repo_id].merge(need) if need.repo_id in merged else need
    return list(merged.values())


def spec_needs(cards: CardSet, names: Iterable[str]) -> list[Need]:
    """Every repository the cards need, each once (the SD1.5 base is fetched once for all its cards)."""
    return merge_needs(need for name in names for need in card_needs(cards, name))


def repo_need(cards: CardSet, repo_id: str, files: Iterable[str] | None = None) -> Need:
    """What to read from ``repo_id`` when a loader asks for it (``files``: exactly those)."""
    if files:
        return Need(repo_id, "files", tuple(files))
    found = [n for name in cards.names() for n in card_needs(cards, name, False) if n.repo_id == repo_id]
    return merge_needs(found)[0] if found else Need(repo_id, "transformers")


def card_for(cards: CardSet, repo_id: str, files: Iterable[str] | None = None) -> str | None:
    """The first card (registry order) whose download fetches ``repo_id`` (and ``files``)."""
    for name in cards.names():
        for need in card_needs(cards, name, False):
            if need.repo_id == repo_id and set(files or ()) <= set(need.files):
                return name
    return None


# -- choosing files -------------------------------------------------------------------------------
def weight_key(name: str) -> tuple[str, str | None] | None:
    """(extension, variant) of a weights file name, e.g. ``("safetensors", "fp16")``; None for others."""
    for ext in WEIGHT_EXTS:
        if name.endswith(ext):
            stem, _, variant = SHARD.sub("", name[: -len(ext)]).partition(".")
            return (ext, variant or None) if stem in WEIGHT_STEMS else None
    return None


def pick_weights(names: Iterable[str], variant: str | None) -> list[str]:
    """ONE set of weights among a folder's file names: safetensors before .bin, ``variant`` first."""
    names = list(names)
    order = [(".safetensors", variant), (".safetensors", None), (".bin", variant), (".bin", None)]
    for ext, var in dict.fromkeys(order):  # without a variant: safetensors, then .bin
        chosen = [n for n in names if weight_key(n) == (ext, var)]
        if chosen:
            indexes = [
                n for n in names if (m := INDEX.fullmatch(n)) and (m["ext"], m["variant"]) == (ext, var)
            ]
            return chosen + indexes
    return []


def _folder_pick(names: list[str], variant: str | None) -> list[str]:
    configs = [n for n in names if n.endswith(CONFIG_EXTS) and not INDEX.fullmatch(n)]
    return configs + pick_weights(names, variant)


def _in_folder(paths: Iterable[str], folder: str) -> list[str]:
    return [p.rpartition("/")[2] for p in paths if p.rpartition("/")[0] == folder]


def select_files(need: Need, paths: Iterable[str]) -> list[str]:
    """The paths to fetch from a repository listing ``paths``."""
    paths = list(paths)
    if need.kind == "files":
        return [f for f in need.files if f in paths]
    if need.kind != "pipeline":
        return _folder_pick(_in_folder(paths, ""), need.variant)
    chosen = ["model_index.json"] if "model_index.json" in paths else []
    for comp in PIPELINE_COMPONENTS:
        chosen += [f"{comp}/{n}" for n in _folder_pick(_in_folder(paths, comp), need.variant)]
    return chosen


# -- is it on disk? -------------------------------------------------------------------------------
def missing_files(need: Need, root: Path) -> list[str]:
    """What the loaders would not find under ``root`` (empty: ready), in words."""
    if not root.is_dir():
        return [f"{root}/"]
    if need.kind == "files":
        return [f for f in need.files if not (root / f).is_file()]
    if need.kind != "pipeline":
        missing = _folder_missing(root, "", True, need.variant)
        if need.kind == "transformers" and not any((root / n).is_file() for n in PROCESSOR_FILES):
            missing.append("preprocessor_config.json")
        return missing
    index = root / "model_index.json"
    if not index.is_file():
        return ["model_index.json"]
    entries = json.loads(index.read_text(encoding="utf-8"))
    missing = []
    for comp in PIPELINE_COMPONENTS:
        class_name = str((entries.get(comp) or [None, ""])[1])
        weights = not any(word in class_name for word in NO_WEIGHTS)
        missing += _folder_missing(root / comp, f"{comp}/", weights, need.variant)
    return missing


def _folder_missing(folder: Path, label: str, weights: bool, variant: str | None) -> list[str]:
    if not folder.is_dir():
        return [label or "config.json"]
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if not weights:
        return [] if any(n.endswith(".json") for n in names) else [label]
    missing = [] if "config.json" in names else [f"{label}config.json"]
    chosen = pick_weights(names, variant)
    if not chosen:
        return [*missing, f"{label}weights"]
    for index in (n for n in chosen if n.endswith(".json")):
        shards = set(json.loads((folder / index).read_text(encoding="utf-8")).get("weight_map", {}).values())
        missing += [f"{label}{s}" for s in sorted(shards) if not (folder / s).is_file()]
    return missing


# -- where is it? ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointStatus:
    repo_id: str
    path: Path | None  # the folder the loaders read (None: nowhere on disk)
    where: str  # "model-dir", "HF cache" or "" (not found)
    missing: tuple[str, ...] = ()
    size_bytes: int = 0

    @property
    def ready(self) -> bool:
        return self.path is not None and not self.missing


@dataclass(frozen=True)
class CardStatus:
    card: str
    checkpoints: tuple[CheckpointStatus, ...]

    @property
    def ready(self) -> bool:
        return all(c.ready for c in self.checkpoints)

    @property
    def size_bytes(self) -> int:
        return sum(c.size_bytes for c in self.checkpoints)


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def storage_folder(repo_id: str, cache: Path | None = None) -> Path:
    return (cache or hub_cache()) / f"models--{repo_id.replace('/', '--')}"


def hf_snapshot(repo_id: str) -> Path | None:
    """The HF cache's snapshot folder of ``repo_id`` (its ``main`` ref, else the newest), if any."""
    storage = storage_folder(repo_id)
    ref = storage / "refs" / "main"
    if ref.is_file() and (storage / "snapshots" / ref.read_text().strip()).is_dir():
        return storage / "snapshots" / ref.read_text().strip()
    snapshots = sorted((storage / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def locate(need: Need, model_dir: Path | None = None) -> CheckpointStatus:
    """Where the loaders will find ``need``: ``model_dir/org/name`` first, then the HF cache."""
    candidates = [("model-dir", model_dir / need.repo_id)] if model_dir is not None else []
    snapshot = hf_snapshot(need.repo_id)
    candidates += [("HF cache", snapshot)] if snapshot is not None else []
    found = [(where, path, missing_files(need, path)) for where, path in candidates if path.is_dir()]
    for where, path, missing in found:
        if not missing:
            return CheckpointStatus(need.repo_id, path, where, (), need_size(need, path))
    if found:
        where, path, missing = found[0]
        return CheckpointStatus(need.repo_id, path, where, tuple(missing))
    return CheckpointStatus(need.repo_id, None, "", ("not downloaded",))


def readiness(cards: CardSet, names: Iterable[str], model_dir: str | Path | None = None) -> list[CardStatus]:
    """Per card (dependencies included): is every checkpoint on disk, where, and how big. No network."""
    model_dir = Path(model_dir).expanduser() if model_dir else None
    seen: dict[Need, CheckpointStatus] = {}
    statuses = []
    for name in names:
        checks = []
        for need in card_needs(cards, name):
            if need not in seen:
                seen[need] = locate(need, model_dir)
            checks.append(seen[need])
        statuses.append(CardStatus(name, tuple(checks)))
    return statuses


def need_size(need: Need, root: Path) -> int:
    """Bytes on disk of what ``need`` reads under ``root`` (symlinks followed)."""
    if need.kind == "files":
        return sum((root / f).stat().st_size for f in need.files if (root / f).is_file())
    return dir_size(root)


def dir_size(root: Path) -> int:
    """Bytes on disk under ``root`` (symlinks followed, hidden folders skipped)."""
    return sum(
        p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def human(n: int) -> str:
    """Bytes as people read them (the weights report, the download summary, the app's models panel)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GB" else f"{n / size:.0f} {unit}"
    return f"{n} B"
