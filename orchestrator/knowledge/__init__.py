"""Knowledge bases: the user's own documents, split, embedded and searched with their sources.

    from orchestrator import Orchestrator
    orch = Orchestrator("TextEmbedding_cpu")
    kb, embedder = orch.knowledge.get("papers", create=True), orch.embedder()
    kb.add(["paper.pdf"], embedder)       # incremental; a progress callback is optional
    for hit in kb.search("cloud-top temperature", embedder):
        print(hit.source, hit.text)       # "paper.pdf p. 3", the chunk

Lower down, ``KnowledgeBase(folder)`` takes the embedder in each call (``base.py``); ``Shelf`` is the folder
of every base, which an Orchestrator owns. The layers: readers (documents to text), chunking (sentences,
Chinese punctuation), search (jieba tokens, rank fusion), store (SQLite + FTS5 BM25, FAISS vectors).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import KnowledgeError
from .base import AddReport, Embedder, Hit, KnowledgeBase, check_name, numbered
from .readers import SUFFIXES, Limits

__all__ = [
    "check_name",
    "AddReport",
    "Embedder",
    "Hit",
    "KnowledgeBase",
    "Limits",
    "ManagedEmbedder",
    "SUFFIXES",
    "Shelf",
    "numbered",
    "observation",
]


class Shelf:
    """The folder of knowledge bases, one subfolder each; bases stay open (their vectors in memory)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._open: dict[str, KnowledgeBase] = {}
        self._guard = threading.Lock()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "kb.sqlite").is_file())

    def get(self, name: str, create: bool = False) -> KnowledgeBase:
        check_name(name)
        with self._guard:
            kb = self._open.get(name) or KnowledgeBase(self.root / name)
            if not kb.exists and not create:
                known = ", ".join(self.names()) or "none yet"
                raise KnowledgeError(f"There is no knowledge base named {name}; the bases are: {known}.")
            self._open[name] = kb
            return kb

    def close(self) -> None:
        with self._guard:
            for kb in self._open.values():
                kb.close()
            self._open.clear()


class ManagedEmbedder:
    """An embedder card as the model manager serves it: loaded on the first ``encode``, locked while it runs."""

    def __init__(self, use: Callable[[], AbstractContextManager[Any]], name: str):
        self._use, self.name = use, name

    def encode(self, texts: Any, kind: str = "passage") -> Any:
        with self._use() as model:
            return model.encode(texts, kind)


@cache
def _texts() -> dict[str, str]:
    path = resources.files("orchestrator") / "data" / "prompts" / "knowledge.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def observation(kb: str, question: str, hits: list[Hit], empty: bool = False) -> str:
    """What the brain reads: each chunk numbered with its source, fenced as untrusted document text."""
    texts = _texts()
    if empty:
        return texts["empty"].format(kb=kb)
    if not hits:
        return texts["none"].format(kb=kb, question=question)
    # Markers inside a document must not close its fence early.
    parts = [texts["header"].format(count=len(hits), kb=kb, question=question)]
    parts += [texts["hit"].format(n=h.n, source=h.source, text=_defused(h.text)) for h in hits]
    return "\n".join(parts)


def _defused(text: str) -> str:
    return text.replace("<<<", "‹‹‹").replace(">>>", "›››")
