"""Fetching the files ``download.select_files`` picks, resumably, into the HF cache or ``DIR/org/name``.

huggingface_hub (2.x) restarts an interrupted file from zero, so the bytes are fetched here: each file
goes to a partial file named by its hash (``blobs/<etag>.incomplete`` in the HF cache, the layout
huggingface_hub itself reads), continues from where it stopped with an HTTP Range request, is checked
against the hub's sha256 (git sha1 for small files), and only then appears where the loaders look.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from .download import Need, select_files, storage_folder

log = logging.getLogger(__name__)
RETRIES = 3  # a dropped connection resumes in the same call this many times


class Bar(Protocol):
    def update(self, n: int) -> Any: ...
    def close(self) -> Any: ...


BarFactory = Callable[[str, int, int], Bar]  # (file path, total bytes, bytes already here) -> a progress bar


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    etag: str  # lfs sha256, or the git blob sha1 for small files
    lfs: bool


@dataclass
class RepoPlan:
    """What fetching one repository will do: its selected files, where they go, which are still to come."""

    need: Need
    commit: str
    files: list[RemoteFile]
    target: Path  # the folder the loaders will read
    model_dir: Path | None = None
    todo: list[RemoteFile] = field(default_factory=list)
    partial: dict[str, int] = field(default_factory=dict)  # path -> bytes already here (resume)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def download_bytes(self) -> int:
        return sum(f.size - self.partial.get(f.path, 0) for f in self.todo)

    def blob(self, f: RemoteFile) -> Path:
        """Where the file's bytes live once complete."""
        if self.model_dir is not None:
            return self.target / f.path
        return self.target.parent.parent / "blobs" / f.etag

    def partial_path(self, f: RemoteFile) -> Path:
        if self.model_dir is not None:
            return self.target / ".cache" / "visual-orchestrator" / f"{f.etag}.incomplete"
        return self.blob(f).with_name(f"{f.etag}.incomplete")

    def lock_path(self, f: RemoteFile) -> Path:
        if self.model_dir is not None:
            return self.partial_path(f).with_suffix(".lock")
        storage = self.target.parent.parent  # huggingface_hub's own lock for this blob
        return storage.parent / ".locks" / storage.name / f"{f.etag}.lock"

    def is_complete(self, f: RemoteFile) -> bool:
        done = self.blob(f)
        return done.is_file() and (self.model_dir is None or done.stat().st_size == f.size)


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def plan(need: Need, model_dir: Path | None = None) -> RepoPlan:
    """Ask the hub for the repository's files (one request) and work out what is still to fetch."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=hub_endpoint()).model_info(need.repo_id, files_metadata=True)
    listing = {s.rfilename: s for s in info.siblings or []}
    files = []
    for path in select_files(need, listing):
        s = listing[path]
        lfs = s.lfs is not None
        files.append(
            RemoteFile(path, s.lfs.size if lfs else s.size or 0, s.lfs.sha256 if lfs else s.blob_id, lfs)
        )
    target = model_dir / need.repo_id if model_dir else storage_folder(need.repo_id) / "snapshots" / info.sha
    result = RepoPlan(need, info.sha, files, target, model_dir)
    for f in files:
        if result.is_complete(f):
            continue
        result.todo.append(f)
        part = result.partial_path(f)
        if part.is_file():
            result.partial[f.path] = min(part.stat().st_size, f.size)
    return result


def execute(repo: RepoPlan, bar: BarFactory | None = None) -> Path:
    """Fetch what ``repo.todo`` lists (resuming partial files), then lay out the folder the loaders read."""
    from huggingface_hub.utils import WeakFileLock, get_session

    base = f"{hub_endpoint()}/{repo.need.repo_id}/resolve/{repo.commit}/"
    for f in repo.todo:
        part, lock = repo.partial_path(f), repo.lock_path(f)
        part.parent.mkdir(parents=True, exist_ok=True)
        lock.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(lock):
            if not repo.is_complete(f):  # another process may have finished it meanwhile
                _fetch(get_session(), base + quote(f.path), part, f, bar)
                repo.blob(f).parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, repo.blob(f))
    if repo.model_dir is None:
        _link_snapshot(repo)
    return repo.target


def _link_snapshot(repo: RepoPlan) -> None:
    for f in repo.files:
        pointer = repo.target / f.path
        if pointer.exists():
            continue
        pointer.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(os.path.relpath(repo.blob(f), pointer.parent), pointer)
        except OSError:  # no symlinks here (Windows without developer mode): a copy reads the same
            shutil.copyfile(repo.blob(f), pointer)
    refs = repo.target.parent.parent / "refs" / "main"
    refs.parent.mkdir(parents=True, exist_ok=True)
    refs.write_text(repo.commit)


def _hasher(f: RemoteFile) -> Any:
    if f.lfs:
        return hashlib.sha256()
    digest = hashlib.sha1()  # git's blob id
    digest.update(b"blob %d\0" % f.size)
    return digest


def _fetch(client: Any, url: str, part: Path, f: RemoteFile, bar: BarFactory | None) -> None:
    """Download ``url`` into ``part``, continuing from its current size; verify the hash."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    have = part.stat().st_size if part.is_file() else 0
    if have > f.size:
        part.unlink()
        have = 0
    digest = _hasher(f)
    if have:
        with part.open("rb") as existing:
            for block in iter(lambda: existing.read(1 << 24), b""):
                digest.update(block)
        log.info("resuming %s at %d of %d bytes", f.path, have, f.size)
    progress = bar(f.path, f.size, have) if bar else None
    attempt = 0
    try:
        while have < f.size:
            headers = build_hf_headers()
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                with client.stream(
                    "GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT
                ) as r:
                    hf_raise_for_status(r)
                    if have and r.status_code != 206:  # the server ignored the range: start over
                        have, digest = 0, _hasher(f)
                        if progress is not None and hasattr(progress, "reset"):
                            progress.reset(total=f.size)
                    with part.open("ab" if have else "wb") as out:
                        for chunk in r.iter_bytes():
                            out.write(chunk)
                            digest.update(chunk)
                            have += len(chunk)
                            if progress is not None:
                                progress.update(len(chunk))
            except Exception as exc:
                if not _transient(exc) or attempt >= RETRIES:
                    raise
                attempt += 1
                log.warning("%s: connection lost at %d bytes (%s); resuming", f.path, have, exc)
                time.sleep(0.5 * attempt)
    finally:
        if progress is not None:
            progress.close()
    if have != f.size or digest.hexdigest() != f.etag:
        part.unlink(missing_ok=True)
        raise OSError(
            f"{f.path} arrived corrupted ({have} of {f.size} bytes, hash mismatch); run the download again."
        )


def _transient(exc: Exception) -> bool:
    import httpx2

    return isinstance(exc, (httpx2.TransportError, httpx2.TimeoutException))
