"""Documents to text: PDF (pypdf), DOCX (python-docx), HTML (BeautifulSoup over lxml), Markdown and plain text.

``read_document`` returns the text of each page (one page for everything but a PDF) or raises a
``KnowledgeError`` that says in one sentence what is wrong with the file: an unknown extension, over the size
limit, gone, encrypted, without a text layer, not what its extension says, or a DOCX that would unpack to far
more than it weighs (a zip bomb).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import KnowledgeError

SUFFIXES = {".pdf": "pdf", ".txt": "text", ".md": "text", ".markdown": "text", ".docx": "docx",
            ".html": "html", ".htm": "html"}  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """What a document may weigh, and unpack to (a DOCX is a zip)."""

    max_bytes: int = 50 * 1024 * 1024
    max_unpacked_bytes: int = 200 * 1024 * 1024
    max_ratio: int = 100  # unpacked / packed for any one member: text XML compresses ~10x, bombs ~1000x


@dataclass(frozen=True)
class Page:
    number: int | None  # 1-based PDF page; None for formats without pages
    text: str


def check_file(path: Path, limits: Limits) -> str:
    """The file's kind ("pdf", "text", ...), or the sentence that says why it cannot be added."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(SUFFIXES))
        raise KnowledgeError(
            f"{path.name}: {path.suffix or 'no extension'} files cannot be added; use {known}."
        )
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise KnowledgeError(f"{path.name}: there is no such file ({path}).") from None
    if not path.is_file():
        raise KnowledgeError(f"{path.name}: is not a file.")
    if size > limits.max_bytes:
        raise KnowledgeError(f"{path.name} is {size / 2**20:.1f} MiB, over the {limits.max_bytes / 2**20:.0f} MiB "
                             "limit; split it into smaller files.")  # fmt: skip
    return kind


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KnowledgeError(f"{path.name} vanished while it was being indexed; nothing was added.") from None


def read_document(name: str, kind: str, data: bytes, limits: Limits) -> list[Page]:
    pages = {"pdf": _pdf, "docx": _docx, "html": _html, "text": _text}[kind](name, data, limits)
    if not any(page.text.strip() for page in pages):
        if kind == "pdf":
            raise KnowledgeError(
                f"{name} has no text layer (a scanned PDF?); run OCR on it first, e.g. ocrmypdf."
            )
        raise KnowledgeError(f"{name} holds no text.")
    return pages


def _text(name: str, data: bytes, limits: Limits) -> list[Page]:
    for encoding in ("utf-8-sig", "gb18030"):  # gb18030 decodes GBK/GB2312, the usual non-UTF-8 Chinese text
        try:
            return [Page(None, data.decode(encoding))]
        except UnicodeDecodeError:
            continue
    raise KnowledgeError(f"{name} is not UTF-8 or GB18030 text; save it as UTF-8.")


def _pdf(name: str, data: bytes, limits: Limits) -> list[Page]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise KnowledgeError(
                f"{name} is encrypted with a password; save an unencrypted copy and add that."
            )
        return [Page(i + 1, page.extract_text() or "") for i, page in enumerate(reader.pages)]
    except KnowledgeError:
        raise
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        if "decrypt" in str(exc).lower() or "encrypt" in str(exc).lower():
            raise KnowledgeError(f"{name} is encrypted; save an unencrypted copy and add that.") from None
        raise KnowledgeError(f"{name} is not a readable PDF ({type(exc).__name__}).") from None


def _docx(name: str, data: bytes, limits: Limits) -> list[Page]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise KnowledgeError(f"{name} is not a DOCX file (it is not a zip archive).") from None
    members = archive.infolist()
    unpacked = sum(m.file_size for m in members)
    bomb = any(
        m.file_size > limits.max_ratio * max(m.compress_size, 1) and m.file_size > 2**20 for m in members
    )
    if bomb or unpacked > limits.max_unpacked_bytes:
        raise KnowledgeError(f"{name} would unpack to {unpacked / 2**20:.0f} MiB from {len(data) / 2**20:.1f} MiB "
                             "(a zip bomb?); it was not opened.")  # fmt: skip
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors... for a broken package
        raise KnowledgeError(f"{name} is not a readable DOCX file ({type(exc).__name__}).") from None
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:
        lines += [" | ".join(cell.text for cell in row.cells) for row in table.rows]
    return [Page(None, "\n".join(lines))]


def _html(name: str, data: bytes, limits: Limits) -> list[Page]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    return [Page(None, soup.get_text("\n", strip=True))]
