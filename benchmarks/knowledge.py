"""Knowledge-base speed on this machine's CPU: ``python -m benchmarks.knowledge [--sizes 10000,100000]``.

Prints one table: the real small embedder's indexing throughput (all-MiniLM-L6-v2, from its PyPI package),
then for each size a base of synthetic chunks (40 words each, drawn Zipf-distributed from a 20,000-word
vocabulary as words are in real text, the question's words among the commonest; random unit vectors: the
store's work does not depend on what the vectors mean) with its write time, its size on disk against the raw float32 embeddings, and
the latency of one query (the question's embedding, BM25, FAISS, fusion) against a brute-force numpy cosine
over the same embeddings. ``--save`` writes the table and its JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
VOCABULARY = (
    20_000  # distinct words, drawn Zipf-distributed as in real text (the question words are common ones)
)
WORDS = ("cloud storm ocean satellite temperature river mountain volcano planet engine bridge harbour forest "
         "glacier desert village market castle library garden 长城 熊猫 长江 节气 温度 卫星").split()  # fmt: skip


def embedder_throughput(embedder, n: int = 512) -> float:
    from orchestrator.knowledge.chunking import split_text

    text = "".join(
        p.read_text(encoding="utf-8") for p in sorted(Path("tests/fixtures/knowledge").glob("*.md"))
    )
    chunks = [text[s.start : s.end] for s in split_text(text)]
    chunks = (chunks * (n // len(chunks) + 1))[:n]
    embedder.encode(chunks[:64])
    started = time.perf_counter()
    embedder.encode(chunks)
    return n / (time.perf_counter() - started)


def synthetic_base(folder: Path, n: int, dim: int, rng: np.random.Generator):
    from orchestrator.knowledge import KnowledgeBase
    from orchestrator.knowledge.store import NewChunk

    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vocabulary = np.array(WORDS + [f"w{i}" for i in range(VOCABULARY - len(WORDS))])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [" ".join(vocabulary[rng.zipf(1.3, 40) % len(vocabulary)]) for _ in range(n)]
    chunks = [NewChunk(None, 0, len(t), t, t) for t in texts]
    record = {"path": "/synthetic.txt", "name": "synthetic.txt", "sha256": "-", "bytes": 0, "pages": 1,
              "added": time.time()}  # fmt: skip
    kb = KnowledgeBase(folder)
    started = time.perf_counter()
    kb.store().replace([], [(record, chunks)], vectors, {"embedder": "synthetic", "dim": str(dim)})
    return kb, vectors, time.perf_counter() - started


class _Fixed:
    """The real embedder for the question; the base's name check passes for synthetic vectors."""

    def __init__(self, embedder):
        self.embedder, self.name = embedder, "synthetic"

    def encode(self, texts, kind="passage"):
        return self.embedder.encode(texts, kind)


def query_times(kb, embedder, vectors, questions: list[str]) -> tuple[float, float]:
    fixed = _Fixed(embedder)
    kb.search(questions[0], fixed)
    ours, base = [], []
    for question in questions:
        started = time.perf_counter()
        kb.search(question, fixed, 4)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        q = embedder.encode([question], "query")[0]
        scores = vectors @ q
        np.argsort(-scores[np.argpartition(-scores, 4)[:4]])
        base.append(time.perf_counter() - started)
    return statistics.median(ours) * 1000, statistics.median(base) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from orchestrator import Orchestrator

    rng = np.random.default_rng(0)
    questions = ["How cold were the cloud tops?", "Which towns did Vesuvius destroy?", "长城是谁连接起来的？",
                 "What is the most abundant protein?", "熊猫每天吃多少竹子？"] * 4  # fmt: skip
    rows, record = [], {"machine": f"{os.cpu_count()} CPU cores", "load_average": os.getloadavg()}
    with (
        Orchestrator("TextEmbeddingEnglish_cpu", brain="rules") as orch,
        tempfile.TemporaryDirectory() as tmp,
    ):
        embedder = orch.embedder()
        record["embed_chunks_per_s"] = embedder_throughput(embedder)
        dim = embedder.encode(["x"]).shape[1]
        for n in [int(s) for s in args.sizes.split(",")]:
            kb, vectors, write_s = synthetic_base(Path(tmp) / f"kb{n}", n, dim, rng)
            disk = sum(p.stat().st_size for p in kb.folder.glob("vectors-*.faiss"))
            ours, base = query_times(kb, embedder, vectors, questions)
            rows.append({"chunks": n, "store_write_s": write_s, "faiss_bytes": disk, "raw_bytes": vectors.nbytes,
                         "folder_bytes": sum(p.stat().st_size for p in kb.folder.iterdir() if p.is_file()),
                         "query_ms": ours, "numpy_query_ms": base})  # fmt: skip
            kb.close()
    record["sizes"] = rows
    lines = [f"machine: {record['machine']}, load average {', '.join(f'{x:.1f}' for x in record['load_average'])}",
             f"indexing, embedder all-MiniLM-L6-v2 on CPU: {record['embed_chunks_per_s']:.0f} chunks/s (goal >= 100)",
             "| chunks | store write s | vectors on disk / raw | whole base on disk | hybrid query ms (incl. "
             "embedding) | numpy cosine ms (incl. embedding) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['chunks']:,} | {r['store_write_s']:.2f} | {r['faiss_bytes'] / r['raw_bytes']:.3f}x | "
                     f"{r['folder_bytes'] / 2**20:.0f} MiB | {r['query_ms']:.1f} | {r['numpy_query_ms']:.1f} |")  # fmt: skip
    print("\n".join(lines))
    if args.save:
        stem = RESULTS / f"{time.strftime('%Y-%m-%d')}-cpu-knowledge"
        stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
