"""A named knowledge base: add documents (incrementally, all or nothing), remove them, search them.

    kb = KnowledgeBase(folder)                       # created on the first add
    kb.add(["paper.pdf", "notes.md"], embedder)      # unchanged files are skipped, changed ones re-indexed
    hits = kb.search("cloud-top temperature", embedder, top_k=4)
    hits[0].source                                   # "paper.pdf p. 3"

``embedder`` is anything with ``name`` (the checkpoint id) and ``encode(texts, kind) -> unit vectors``: the
``text_embedding`` family's model. A base remembers which embedder built it and refuses another one.
Writers take the base's file lock; a second add of the same base at once is refused in one sentence.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ..errors import KnowledgeError
from .chunking import split_text
from .readers import Limits, check_file, read_bytes, read_document
from .search import fuse, match_query, tokens
from .store import FileRecord, NewChunk, Store

NAME = re.compile(r"^[A-Za-z0-9\u4e00-\u9fff][\w\u4e00-\u9fff.-]{0,63}$")
Progress = Callable[[str, int, int], None]  # (stage, done, total)
EMBED_BATCH = 256


class Embedder(Protocol):
    name: str

    def encode(self, texts: Sequence[str], kind: str = "passage") -> Any: ...


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk and where it came from (``start``/``end``: characters in that page's text)."""

    n: int
    file: str
    path: str
    page: int | None
    start: int
    end: int
    text: str
    score: float
    bm25_rank: int | None = None
    dense_rank: int | None = None

    @property
    def source(self) -> str:
        return f"{self.file} p. {self.page}" if self.page else self.file

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "file": self.file, "path": self.path, "page": self.page, "start": self.start,
                "end": self.end, "source": self.source, "score": round(self.score, 6), "text": self.text,
                "bm25_rank": self.bm25_rank, "dense_rank": self.dense_rank}  # fmt: skip


@dataclass
class AddReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise KnowledgeError(f"{name!r} is not a knowledge base name: use letters, digits, '_', '-' or '.' "
                             "(up to 64, not starting with '.' or '-').")  # fmt: skip
    return name


class KnowledgeBase:
    def __init__(
        self, folder: Path, *, chunk_size: int = 250, overlap: int = 50, limits: Limits | None = None
    ):
        self.folder = Path(folder)
        self.name = self.folder.name
        self.chunk_size, self.overlap = chunk_size, overlap
        self.limits = limits or Limits()
        self._store: Store | None = None
        self._guard = threading.Lock()

    @property
    def exists(self) -> bool:
        return (self.folder / "kb.sqlite").is_file()

    def store(self) -> Store:
        with self._guard:
            if self._store is None:
                self._store = Store(self.folder)
            return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def files(self) -> list[FileRecord]:
        return self.store().files() if self.exists else []

    @property
    def embedder_name(self) -> str | None:
        return self.store().meta("embedder") if self.exists else None

    # -- changing -------------------------------------------------------------------------------
    def add(
        self, paths: Iterable[str | Path], embedder: Embedder, progress: Progress | None = None
    ) -> AddReport:
        """Index the files (see the module docstring); any bad file leaves the base as it was."""
        report, started = AddReport(), time.perf_counter()
        progress = progress or (lambda stage, done, total: None)
        files = [Path(p).expanduser().resolve() for p in paths]
        kinds = [check_file(path, self.limits) for path in files]  # every file checked before any is read
        with self._lock():
            self._check_embedder(embedder)
            known = {f.path: f for f in self.store().files()}
            added, removed, texts = [], [], []
            for i, (path, kind) in enumerate(zip(files, kinds)):
                progress("reading", i, len(files))
                data = read_bytes(path)
                digest = hashlib.sha256(data).hexdigest()
                old = known.get(str(path))
                if old is not None and old.sha256 == digest:
                    report.unchanged.append(path.name)
                    continue
                (report.updated if old else report.added).append(path.name)
                if old:
                    removed.append(str(path))
                chunks = self._chunks(path.name, kind, data)
                record = {"path": str(path), "name": path.name, "sha256": digest, "bytes": len(data),
                          "pages": max(1, len({c.page for c in chunks})), "added": time.time()}  # fmt: skip
                added.append((record, chunks))
                texts += [c.text for c in chunks]
            progress("reading", len(files), len(files))
            vectors = self._embed(texts, embedder, progress)
            if added or removed:
                self.store().replace(removed, added, vectors, self._meta(embedder, vectors))
        report.chunks, report.seconds = len(texts), time.perf_counter() - started
        return report

    def remove(self, file: str | Path) -> str:
        """Remove one file by its path or, when it is unique, its name; returns the name removed."""
        with self._lock():
            path = self._find(str(file))
            self.store().replace([path.path], [], None, {})
        return path.name

    def _chunks(self, name: str, kind: str, data: bytes) -> list[NewChunk]:
        chunks = []
        for page in read_document(name, kind, data, self.limits):
            for span in split_text(page.text, self.chunk_size, self.overlap):
                text = page.text[span.start : span.end]
                chunks.append(NewChunk(page.number, span.start, span.end, text, " ".join(tokens(text))))
        return chunks

    def _embed(self, texts: list[str], embedder: Embedder, progress: Progress) -> Any:
        import numpy as np

        parts = []
        for start in range(0, len(texts), EMBED_BATCH):
            progress("embedding", start, len(texts))
            parts.append(
                np.asarray(embedder.encode(texts[start : start + EMBED_BATCH], "passage"), np.float32)
            )
        progress("embedding", len(texts), len(texts))
        return np.concatenate(parts) if parts else None

    def _meta(self, embedder: Embedder, vectors: Any) -> dict[str, str]:
        meta = {"embedder": embedder.name, "chunk_size": str(self.chunk_size), "overlap": str(self.overlap)}
        if vectors is not None:
            meta["dim"] = str(vectors.shape[1])
        return meta

    def _check_embedder(self, embedder: Embedder) -> None:
        built = self.embedder_name
        if built and built != embedder.name:
            raise KnowledgeError(f"Knowledge base {self.name} was built with the embedder {built}, not "
                                 f"{embedder.name}; use that one, or make a new base.")  # fmt: skip

    def _find(self, file: str) -> FileRecord:
        records = self.files()
        resolved = str(Path(file).expanduser().resolve())
        found = [r for r in records if r.path == resolved] or [r for r in records if r.name == file]
        if len(found) == 1:
            return found[0]
        if found:
            raise KnowledgeError(f"{len(found)} files in {self.name} are named {file}; give its full path.")
        names = ", ".join(r.name for r in records) or "none"
        raise KnowledgeError(f"Knowledge base {self.name} has no file {file}; it has: {names}.")

    def _lock(self) -> Any:
        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / ".lock"), timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise KnowledgeError(f"Knowledge base {self.name} is being changed by another add or remove; "
                                 "try again when it has finished.") from None  # fmt: skip
        return _Release(lock)

    # -- searching ------------------------------------------------------------------------------
    def search(
        self,
        question: str,
        embedder: Embedder,
        top_k: int = 4,
        *,
        candidates: int = 50,
        query: Any = None,
        rerank: Callable[[str, list[Hit]], list[Hit]] | None = None,
    ) -> list[Hit]:
        """The ``top_k`` chunks for ``question``: BM25 and dense rankings fused by reciprocal rank, then
        ``rerank`` (e.g. a cross-encoder) over the fused candidates if one is given. ``query``: the question's
        vector when the caller has it already (one embedding for several bases)."""
        if not self.exists or not self.store().chunk_count():
            return []
        self._check_embedder(embedder)
        store = self.store()
        lexical = store.bm25(match_query(question), candidates)
        query = embedder.encode([question], "query")[0] if query is None else query
        dense = store.dense(query, candidates)
        fused = fuse([lexical, dense])[: candidates if rerank else top_k]
        rows = store.chunks([i for i, _ in fused])
        bm25_rank = {i: r for r, i in enumerate(lexical, 1)}
        dense_rank = {i: r for r, i in enumerate(dense, 1)}
        hits = [
            Hit(0, *rows[i], score, bm25_rank.get(i), dense_rank.get(i)) for i, score in fused if i in rows
        ]
        if rerank:
            hits = rerank(question, hits)
        return numbered(hits[:top_k])


def numbered(hits: list[Hit]) -> list[Hit]:
    """The hits numbered 1, 2, ... in their order (the [n] a reply cites)."""
    return [replace(hit, n=n) for n, hit in enumerate(hits, 1)]


class _Release:
    def __init__(self, lock: Any):
        self.lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.lock.release()
