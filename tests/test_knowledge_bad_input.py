"""Bad input to a knowledge base: one clear sentence each, and the base left exactly as it was."""

from __future__ import annotations

import io
import threading
import zipfile
from pathlib import Path

import pytest

from orchestrator import Orchestrator
from orchestrator.errors import KnowledgeError
from orchestrator.knowledge import KnowledgeBase, Limits


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    root = tmp_path_factory.mktemp("orch")
    with Orchestrator("TextEmbedding_cpu", weights="tiny", brain="rules", session_root=root) as orch:
        yield orch.embedder()


@pytest.fixture
def kb(embedder, tmp_path):
    good = tmp_path / "good.md"
    good.write_text(
        "The lighthouse keeper lit the lamp at dusk. Ships passed safely all night.", encoding="utf-8"
    )
    kb = KnowledgeBase(tmp_path / "kb", limits=Limits(max_bytes=2**20))
    kb.add([good], embedder)
    yield kb
    kb.close()


def state(kb: KnowledgeBase, embedder) -> tuple:
    return ([(f.name, f.sha256, f.chunks) for f in kb.files()],
            [(h.file, h.text) for h in kb.search("lighthouse lamp", embedder, 5)])  # fmt: skip


def refused(kb, embedder, files, match: str, **kwargs) -> None:
    before = state(kb, embedder)
    with pytest.raises(KnowledgeError, match=match) as caught:
        kb.add(files, embedder, **kwargs)
    message = str(caught.value)
    assert message.count(". ") <= 1 and message.endswith("."), message  # one sentence
    assert state(kb, embedder) == before


def pdf_bytes(text: str | None, password: str | None = None) -> bytes:
    from fpdf import FPDF
    from pypdf import PdfReader, PdfWriter

    pdf = FPDF()
    pdf.add_page()
    if text:
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 10, text)
    else:  # a scan: a picture and no text layer
        pdf.set_fill_color(90, 90, 90)
        pdf.rect(20, 20, 100, 60, style="F")
    data = bytes(pdf.output())
    if password is None:
        return data
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_an_encrypted_pdf(kb, embedder, tmp_path):
    (tmp_path / "secret.pdf").write_bytes(pdf_bytes("Hidden words.", password="pw"))
    refused(kb, embedder, [tmp_path / "secret.pdf"], "secret.pdf is encrypted")


def test_a_scanned_pdf_without_text(kb, embedder, tmp_path):
    (tmp_path / "scan.pdf").write_bytes(pdf_bytes(None))
    refused(kb, embedder, [tmp_path / "scan.pdf"], "scan.pdf has no text layer")


def test_a_docx_zip_bomb(kb, embedder, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", b"\0" * (300 * 2**20))  # 300 MiB of zeros, ~300 KiB packed
    (tmp_path / "bomb.docx").write_bytes(buffer.getvalue())
    refused(
        kb,
        embedder,
        [tmp_path / "bomb.docx"],
        "bomb.docx would unpack to 300 MiB",
    )


def test_a_file_over_the_size_limit(kb, embedder, tmp_path):
    (tmp_path / "huge.txt").write_text("word " * 250000, encoding="utf-8")
    refused(kb, embedder, [tmp_path / "huge.txt"], "huge.txt is 1.2 MiB, over the 1 MiB limit")


@pytest.mark.parametrize("name, data, match", [
    ("tool.exe", b"MZ\x90\x00", r"tool.exe: .exe files cannot be added; use .docx, .htm"),
    ("fake.pdf", b"just text, not a PDF", "fake.pdf is not a readable PDF"),
    ("fake.docx", b"just text", "fake.docx is not a DOCX file"),
])  # fmt: skip
def test_a_wrong_extension(kb, embedder, tmp_path, name, data, match):
    (tmp_path / name).write_bytes(data)
    refused(kb, embedder, [tmp_path / name], match)


def test_a_file_that_vanishes_mid_index(kb, embedder, tmp_path):
    first, second = tmp_path / "one.txt", tmp_path / "two.txt"
    first.write_text("The first file is fine.", encoding="utf-8")
    second.write_text("The second file will be gone.", encoding="utf-8")

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "reading" and done == 1:
            second.unlink()

    refused(kb, embedder, [first, second], "two.txt vanished while it was being indexed", progress=progress)


def test_two_adds_of_the_same_base_at_once(kb, embedder, tmp_path):
    other = tmp_path / "other.md"
    other.write_text("Another document about harbours.", encoding="utf-8")
    inside, release = threading.Event(), threading.Event()

    def slow(stage: str, done: int, total: int) -> None:
        inside.set()
        release.wait(10)

    worker = threading.Thread(target=kb.add, args=([other], embedder), kwargs={"progress": slow})
    worker.start()
    assert inside.wait(10)
    second = KnowledgeBase(kb.folder)  # another writer, as a second process would be
    with pytest.raises(KnowledgeError, match="kb is being changed by another add or remove; try again"):
        second.add([other], embedder)
    release.set()
    worker.join()
    assert [f.name for f in kb.files()] == ["good.md", "other.md"]
    second.close()


def test_an_unknown_base_and_a_bad_name(embedder, tmp_path):
    from orchestrator.knowledge import Shelf

    shelf = Shelf(tmp_path)
    with pytest.raises(
        KnowledgeError, match="There is no knowledge base named papers; the bases are: none yet."
    ):
        shelf.get("papers")
    with pytest.raises(KnowledgeError, match="is not a knowledge base name"):
        shelf.get("../etc")
    assert not any(Path(tmp_path).iterdir())
