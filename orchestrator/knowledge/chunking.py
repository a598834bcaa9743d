"""Splitting text into overlapping chunks that end at sentence boundaries, English and Chinese alike.

A sentence ends after ``. ! ? ;`` followed by a space, after Chinese ``。！？；…`` (no space follows them),
or at a blank line. Chunks gather whole sentences up to ``size`` characters and start again ``overlap``
characters (whole sentences; the last sentence when none is that short and it is under half a chunk) before
the previous end, so a fact split across two chunks is whole in one of
them; a sentence longer than ``size`` is cut at a comma (``，,、``) or, failing that, at ``size``.
Langchain-Chatchat's default of 250 characters with 50 overlap is the default here too; docs/knowledge.md
has the measurements against other sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?:[.!?;](?=\s)|[。！？；…]+[”’」』）)]*|\n\s*\n)\s*")
_SOFT_BREAK = re.compile(r"[，,、：:]\s*")


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def sentences(text: str) -> list[Span]:
    """The sentences of ``text`` as character spans (trailing spaces included, so they tile the text)."""
    spans, start = [], 0
    for found in _SENTENCE_END.finditer(text):
        if found.end() > start:
            spans.append(Span(start, found.end()))
            start = found.end()
    if start < len(text):
        spans.append(Span(start, len(text)))
    return spans


def _pieces(text: str, span: Span, size: int) -> list[Span]:
    """A sentence longer than ``size`` cut at soft breaks, else hard at ``size``."""
    if span.end - span.start <= size:
        return [span]
    out, start = [], span.start
    while span.end - start > size:
        window = text[start : start + size]
        breaks = [m.end() for m in _SOFT_BREAK.finditer(window) if m.end() > size // 2]
        cut = start + (breaks[-1] if breaks else size)
        out.append(Span(start, cut))
        start = cut
    out.append(Span(start, span.end))
    return out


def split_text(text: str, size: int = 250, overlap: int = 50) -> list[Span]:
    """Chunks of ``text`` as spans, each at most ``size`` characters (see the module docstring)."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"chunk size must be positive and overlap in [0, size), got {size}, {overlap}")
    units = [p for s in sentences(text) for p in _pieces(text, s, size)]
    chunks: list[Span] = []
    i = 0
    while i < len(units):
        j = i
        while j + 1 < len(units) and units[j + 1].end - units[i].start <= size:
            j += 1
        chunk = Span(units[i].start, units[j].end)
        if text[chunk.start : chunk.end].strip():
            chunks.append(_trimmed(text, chunk))
        if j + 1 >= len(units):
            break
        k = j  # step back over whole sentences worth at most ``overlap`` characters
        while k > i and units[j].end - units[k].start <= overlap:
            k -= 1
        if k == j and j > i and units[j].end - units[j].start <= size // 2:
            k = j - 1  # no whole sentence fits the overlap: repeat the last one if it is short
        i = k + 1 if k < j else j + 1
    return chunks


def _trimmed(text: str, span: Span) -> Span:
    start, end = span.start, span.end
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end)
