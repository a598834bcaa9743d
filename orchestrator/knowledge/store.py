"""One knowledge base on disk: SQLite for files, chunks and BM25 (FTS5), FAISS for the vectors.

``kb.sqlite`` holds the files (path, SHA-256), the chunks (text, page, character span), their jieba tokens
in an FTS5 table (its ``bm25`` ranking) and the name of the current vector file. ``vectors-N.faiss`` is an
exact inner-product index over unit vectors (cosine), keyed by chunk id. A change writes the next vector
file whole, then commits the SQLite transaction that names it: a crash or an error before the commit leaves
the previous state, both halves of it. docs/knowledge.md has the measurements behind FAISS.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL, pages INTEGER NOT NULL, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES files(id), page INTEGER,
    start INTEGER NOT NULL, end INTEGER NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks(file_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(tokens, tokenize = 'porter unicode61');
"""


@dataclass(frozen=True)
class FileRecord:
    path: str
    name: str
    sha256: str
    bytes: int
    pages: int
    chunks: int
    added: float


@dataclass(frozen=True)
class NewChunk:
    page: int | None
    start: int
    end: int
    text: str
    tokens: str  # space-joined search tokens (jieba)


class Store:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(folder / "kb.sqlite", check_same_thread=False, isolation_level=None)
        self.db.executescript(SCHEMA)
        self._index: Any = None
        self._index_name: str | None = None

    def close(self) -> None:
        self.db.close()

    # -- reading --------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def files(self) -> list[FileRecord]:
        rows = self.db.execute(
            "SELECT path, name, sha256, bytes, pages, (SELECT count(*) FROM chunks c WHERE c.file_id = f.id),"
            " added FROM files f ORDER BY name, path"
        ).fetchall()
        return [FileRecord(*row) for row in rows]

    def chunk_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]

    def chunks(self, ids: Sequence[int]) -> dict[int, tuple[str, str, int | None, int, int, str]]:
        """id -> (file name, file path, page, start, end, text)."""
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT c.id, f.name, f.path, c.page, c.start, c.end, c.text FROM chunks c"
            f" JOIN files f ON f.id = c.file_id WHERE c.id IN ({marks})",
            list(ids),
        ).fetchall()
        return {row[0]: row[1:] for row in rows}

    def bm25(self, match: str, limit: int) -> list[int]:
        if not match:
            return []
        rows = self.db.execute(
            "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?", (match, limit)
        ).fetchall()
        return [row[0] for row in rows]

    def dense(self, query: Any, limit: int) -> list[int]:
        index = self.index()
        if index is None or index.ntotal == 0:
            return []
        _, ids = index.search(query.reshape(1, -1), min(limit, index.ntotal))
        return [int(i) for i in ids[0] if i >= 0]

    def index(self) -> Any:
        """The current FAISS index, read again only when another writer has committed a new one."""
        import faiss

        name = self.meta("vectors")
        if name != self._index_name:
            self._index = faiss.read_index(str(self.folder / name)) if name else None
            self._index_name = name
        return self._index

    # -- writing (the caller holds the base's file lock) ----------------------------------------
    def replace(self, removed_paths: Iterable[str], added: list[tuple[dict[str, Any], list[NewChunk]]],
                vectors: Any, meta: dict[str, str]) -> None:  # fmt: skip
        """Remove these files' chunks and add the new files' chunks and ``vectors`` (one row per chunk, in
        order), all or nothing."""
        import faiss
        import numpy as np

        index = self.index()
        index = faiss.clone_index(index) if index is not None else None
        old = self.meta("vectors")
        name = f"vectors-{int(old.split('-')[1].split('.')[0]) + 1 if old else 1}.faiss"
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            gone: list[int] = []
            for path in removed_paths:
                ids = [r[0] for r in cur.execute("SELECT c.id FROM chunks c JOIN files f ON f.id = c.file_id "
                                                 "WHERE f.path = ?", (path,))]  # fmt: skip
                gone += ids
                cur.executemany("DELETE FROM chunks_fts WHERE rowid = ?", [(i,) for i in ids])
                cur.execute(
                    "DELETE FROM chunks WHERE file_id IN (SELECT id FROM files WHERE path = ?)", (path,)
                )
                cur.execute("DELETE FROM files WHERE path = ?", (path,))
            new_ids: list[int] = []
            for record, chunks in added:
                cur.execute("INSERT INTO files (path, name, sha256, bytes, pages, added) VALUES "
                            "(:path, :name, :sha256, :bytes, :pages, :added)", record)  # fmt: skip
                file_id = cur.lastrowid
                for chunk in chunks:
                    cur.execute("INSERT INTO chunks (file_id, page, start, end, text) VALUES (?, ?, ?, ?, ?)",
                                (file_id, chunk.page, chunk.start, chunk.end, chunk.text))  # fmt: skip
                    new_ids.append(cur.lastrowid)
                    cur.execute(
                        "INSERT INTO chunks_fts (rowid, tokens) VALUES (?, ?)", (new_ids[-1], chunk.tokens)
                    )
            if index is None and len(new_ids):
                index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
            if index is not None:
                if gone:
                    index.remove_ids(np.asarray(gone, dtype=np.int64))
                if new_ids:
                    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                       np.asarray(new_ids, dtype=np.int64))  # fmt: skip
            if index is not None:
                faiss.write_index(index, str(self.folder / name))
                meta = {**meta, "vectors": name}
            cur.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            (self.folder / name).unlink(missing_ok=True)
            raise
        if old and index is not None:
            (self.folder / old).unlink(missing_ok=True)
