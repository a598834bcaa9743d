"""Knowledge-base retrieval on real text with the real small embedder (all-MiniLM-L6-v2 from its PyPI package).

62 questions (35 English, 27 Chinese) over passages in tests/fixtures/knowledge, each answered by one known
passage: the hybrid search must put it in the top 3. The figures (recall@3, MRR@10, for BM25 alone, dense
alone and fused) are in docs/knowledge.md; ``pytest -s`` prints them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator import Orchestrator
from orchestrator.knowledge import KnowledgeBase
from orchestrator.knowledge.chunking import split_text
from orchestrator.knowledge.search import match_query

FIXTURES = Path(__file__).parent / "fixtures" / "knowledge"
DOCUMENTS = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".md", ".txt") and p.name != "README.md")


def questions() -> list[tuple[str, str, str]]:
    lines = (FIXTURES / "questions.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def orch(tmp_path_factory):
    root = tmp_path_factory.mktemp("kb")
    with Orchestrator("TextEmbeddingEnglish_cpu", brain="rules", session_root=root / "s",
                      settings=None) as orch:  # fmt: skip
        yield orch


@pytest.fixture(scope="module")
def embedder(orch):
    return orch.embedder()


@pytest.fixture(scope="module")
def kb(embedder, tmp_path_factory):
    kb = KnowledgeBase(tmp_path_factory.mktemp("bases") / "fixtures")
    kb.add(DOCUMENTS, embedder)
    yield kb
    kb.close()


def ranks(kb: KnowledgeBase, embedder) -> dict[str, dict[str, list[int | None]]]:
    """The 1-based rank of the first chunk holding each question's key (None past 10), per mode and language."""
    store = kb.store()
    out: dict[str, dict[str, list[int | None]]] = {
        m: {"en": [], "zh": []} for m in ("bm25", "dense", "hybrid")
    }
    for question, file, key in questions():
        query = embedder.encode([question], "query")[0]  # once: the three rankings share it
        found = {"hybrid": [(h.file, h.text) for h in kb.search(question, embedder, 10, query=query)]}
        for mode, ids in (("bm25", store.bm25(match_query(question), 10)), ("dense", store.dense(query, 10))):
            rows = store.chunks(ids)
            found[mode] = [(rows[i][0], rows[i][5]) for i in ids]
        for mode, hits in found.items():
            rank = next((r for r, (f, text) in enumerate(hits, 1) if f == file and key in text), None)
            out[mode]["en" if file.endswith(".md") else "zh"].append(rank)
    return out


def recall_mrr(found: list[int | None]) -> tuple[float, float]:
    return (sum(1 for r in found if r and r <= 3) / len(found), sum(1 / r for r in found if r) / len(found))


def test_the_answering_passage_is_in_the_top_three(kb, embedder):
    table = ranks(kb, embedder)
    for mode, by_language in table.items():
        for language, found in by_language.items():
            recall, mrr = recall_mrr(found)
            print(f"{mode:6} {language} n={len(found)} recall@3={recall:.3f} MRR@10={mrr:.3f}")
    assert len(questions()) >= 50
    en, zh = (recall_mrr(table["hybrid"][lang]) for lang in ("en", "zh"))
    assert en[0] >= 0.9 and zh[0] >= 0.85, (en, zh)
    assert en[1] >= 0.8 and zh[1] >= 0.75, (en, zh)


def test_hits_keep_file_and_span_of_their_text(kb, embedder):
    [hit] = kb.search("Which towns did Vesuvius destroy?", embedder, 1)
    assert hit.file == "volcanoes.md" and hit.page is None and hit.source == "volcanoes.md"
    page = (FIXTURES / "volcanoes.md").read_text(encoding="utf-8")
    assert page[hit.start : hit.end] == hit.text and "Pompeii" in hit.text


def test_chunks_end_at_sentences_in_english_and_chinese():
    text = (FIXTURES / "great_wall.txt").read_text(encoding="utf-8") * 3
    spans = split_text(text, 120, 30)
    assert all(s.end - s.start <= 120 for s in spans)
    assert all(text[s.end - 1] in "。！？”" for s in spans[:-1]), [text[s.start : s.end] for s in spans]
    english = "One sentence here. Another one follows! A third? " * 10
    spans = split_text(english, 100, 20)
    assert all(english[s.end - 1] in ".!?" for s in spans)
    assert all(a.end > b.start for a, b in zip(spans, spans[1:])), "neighbours overlap by whole sentences"


def test_adding_again_skips_unchanged_files_and_reindexes_changed_ones(embedder, tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(FIXTURES, docs, ignore=shutil.ignore_patterns("*.tsv", "README.md"))
    kb = KnowledgeBase(tmp_path / "kb")
    first = kb.add([docs / "rome.md", docs / "panda.txt"], embedder)
    assert sorted(first.added) == ["panda.txt", "rome.md"] and first.chunks > 0
    again = kb.add([docs / "rome.md", docs / "panda.txt"], embedder)
    assert sorted(again.unchanged) == ["panda.txt", "rome.md"] and again.chunks == 0
    (docs / "rome.md").write_text("Hadrian built a wall across northern Britain in 122 AD.", encoding="utf-8")
    changed = kb.add([docs / "rome.md", docs / "panda.txt"], embedder)
    assert changed.updated == ["rome.md"] and changed.unchanged == ["panda.txt"]
    [hit] = kb.search("Who built a wall in Britain?", embedder, 1)
    assert "Hadrian" in hit.text
    assert not any("Romulus" in h.text for h in kb.search("Romulus founded Rome", embedder, 10))
    assert kb.remove("rome.md") == "rome.md"
    assert [f.name for f in kb.files()] == ["panda.txt"]
    assert {h.file for h in kb.search("Hadrian wall", embedder, 10)} == {"panda.txt"}
    kb.close()


def test_a_pdf_hit_names_its_page(embedder, tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    for text in ("The first page talks about apples and orchards.",
                 "The second page says the cloud-top temperature was minus sixty degrees."):  # fmt: skip
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 10, text)
    pdf.output(str(tmp_path / "paper.pdf"))
    kb = KnowledgeBase(tmp_path / "kb")
    kb.add([tmp_path / "paper.pdf"], embedder)
    [hit] = kb.search("How cold was the cloud top?", embedder, 1)
    assert (hit.file, hit.page, hit.source) == ("paper.pdf", 2, "paper.pdf p. 2")
    kb.close()
