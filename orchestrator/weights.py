"""Where checkpoints come from: ``hub`` (HF cache, hub, or ``--model-dir DIR/org/name``) or ``tiny``.

Both modes return a local folder with the real on-disk layout; the families load it with the same
``from_pretrained`` code either way. Nothing here runs at start-up: a checkpoint is resolved on the
first use of a model that needs it, so a missing one is reported then, with the command that fetches it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MissingWeightsError
from .settings import WeightsMode, cache_root

if TYPE_CHECKING:
    from .cards import CardSet

log = logging.getLogger(__name__)

TINY_LAYOUT_VERSION = "1"  # bump when a tiny builder changes, so cached tiny checkpoints are rebuilt
# Checkpoints a PyPI package ships (module, zip file inside it): used offline when the HF cache lacks them.
PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": ("all_minilm_l6_v2", "model.zip")}


class WeightResolver:
    """Resolves a hub repo id to a local folder, once per repo (thread-safe)."""

    def __init__(
        self, mode: WeightsMode = "hub", model_dir: str | Path | None = None, cache_dir: Path | None = None
    ):
        if mode not in ("hub", "tiny"):
            raise ValueError(f"weights mode must be 'hub' or 'tiny', got {mode!r}")
        self.mode = mode
        self.model_dir = Path(model_dir).expanduser() if model_dir else None
        self.cache_dir = cache_dir or cache_root()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._registry: CardSet | None = None  # model_cards.yaml, read on the first hub resolve
        self._resolved: dict[str, Path] = {}
        self._paths: dict[tuple[str, ...], Path] = {}

    def resolve(self, repo_id: str, files: list[str] | None = None) -> Path:
        """A local folder holding ``repo_id``; ``files`` limits a hub download to what the loader reads."""
        with self._guard:
            lock = self._locks.setdefault(repo_id, threading.Lock())
        key = (repo_id, *(files or ()))  # lllyasviel/Annotators is asked for one file at a time
        with lock:
            if key not in self._paths:
                path = self._tiny(repo_id) if self.mode == "tiny" else self._hub(repo_id, files)
                self._paths[key] = self._resolved[repo_id] = path
            return self._paths[key]

    # -- hub ------------------------------------------------------------------------------------
    def _hub(self, repo_id: str, files: list[str] | None) -> Path:
        """``--model-dir DIR/org/name``, else the HF cache, else a download of what the loaders read."""
        from .download import locate, repo_need
        from .fetch import execute, plan

        need = repo_need(self._cards(), repo_id, files)
        found = locate(need, self.model_dir)
        if found.ready:
            return found.path
        packaged = self._packaged(repo_id)
        if packaged is not None:
            return packaged
        try:
            log.info("downloading %s from the Hugging Face hub", repo_id)
            path = execute(plan(need))
        except Exception as exc:  # offline, unreachable, gated, not found: the same advice applies
            raise MissingWeightsError(self._missing_message(repo_id, files, exc)) from exc
        missing = locate(need, self.model_dir).missing
        if missing:
            raise MissingWeightsError(self._missing_message(repo_id, files, FileNotFoundError(missing[0])))
        return path

    def _packaged(self, repo_id: str) -> Path | None:
        """The checkpoint unpacked from the PyPI package that ships it (once, into the cache), if installed."""
        import importlib.util
        import zipfile

        module, zip_name = PACKAGED.get(repo_id, (None, None))
        spec = importlib.util.find_spec(module) if module else None
        if spec is None or not spec.submodule_search_locations:
            return None
        archive = Path(next(iter(spec.submodule_search_locations))) / str(zip_name)
        target = self.cache_dir / "packaged" / repo_id
        stamp = target / ".unpacked"
        if stamp.is_file() and stamp.read_text() == str(archive.stat().st_size):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
            (tmp / ".unpacked").write_text(str(archive.stat().st_size))
            shutil.rmtree(target, ignore_errors=True)
            try:
                tmp.rename(target)
            except OSError:  # another process unpacked it first: the same files
                if not (target / ".unpacked").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _cards(self) -> CardSet:
        from .cards import load_cards

        if self._registry is None:
            self._registry = load_cards()
        return self._registry

    def _missing_message(self, repo_id: str, files: list[str] | None, exc: Exception) -> str:
        from .download import card_for

        where = "the Hugging Face cache"
        if self.model_dir is not None:
            where += f" or {self.model_dir / repo_id}"
        card = card_for(self._cards(), repo_id, files)
        command = f"python -m orchestrator download --load {card}_cpu" if card else f"hf download {repo_id}"
        return (
            f"Checkpoint {repo_id} is not in {where} and could not be downloaded ({type(exc).__name__}). "
            f"Fetch it with `{command}` on a machine with internet access "
            f"(add `--model-dir DIR` to put it in DIR/{repo_id}, then pass --model-dir DIR here), "
            "or run with --weights tiny to try the app."
        )

    # -- tiny -----------------------------------------------------------------------------------
    def _tiny(self, repo_id: str) -> Path:
        target = self.cache_dir / "tiny" / repo_id
        stamp = target / ".tiny-layout"
        if stamp.is_file() and stamp.read_text() == TINY_LAYOUT_VERSION:
            return target
        from foundation_models.tiny import build_tiny_checkpoint

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            log.info("building tiny checkpoint %s", repo_id)
            build_tiny_checkpoint(repo_id, tmp)
            (tmp / ".tiny-layout").write_text(TINY_LAYOUT_VERSION)
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            try:
                tmp.rename(target)
            except OSError:  # another process finished first: its copy is the same bytes
                if not (target / ".tiny-layout").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target
