"""A fetched page's main text (trafilatura: article and comments, without menus and boilerplate), title, images."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

from .guarded import Fetched

HTML = ("text/html", "application/xhtml+xml")
TEXT = (*HTML, "text/plain")


@dataclass(frozen=True)
class PageText:
    url: str
    title: str
    text: str
    images: tuple[str, ...] = ()  # absolute http(s) addresses, the page's own order


def extract(page: Fetched) -> PageText:
    if page.content_type not in HTML:
        text = page.body.decode(page.charset or "utf-8", "replace").strip()
        return PageText(page.url, page.url, text)
    import lxml.html
    import trafilatura

    markup: str | bytes = page.body.decode(page.charset, "replace") if page.charset else page.body
    doc = trafilatura.bare_extraction(markup, url=page.url, include_comments=True, include_tables=True,
                                      with_metadata=True)  # fmt: skip
    try:
        tree = lxml.html.fromstring(markup)
    except (ValueError, lxml.etree.ParserError):
        tree = None
    title = (getattr(doc, "title", None) or _title(tree) or page.url).strip()
    text = (getattr(doc, "text", None) or "").strip()
    comments = (getattr(doc, "comments", None) or "").strip()
    if comments:
        text = f"{text}\n\nComments:\n{comments}".strip()
    if not text and tree is not None:  # trafilatura found no main text: the visible text as it is
        text = " ".join(tree.text_content().split())
    return PageText(page.url, " ".join(title.split())[:200], text, _images(tree, page.url))


def _title(tree: object) -> str:
    found = tree.findtext(".//title") if tree is not None else None
    return found or ""


def _images(tree: object, base: str) -> tuple[str, ...]:
    if tree is None:
        return ()
    sources = tree.xpath("//meta[@property='og:image']/@content | //img/@src | //img/@data-src")
    absolute = (urljoin(base, str(s).strip()) for s in sources if str(s).strip())
    return tuple(dict.fromkeys(u for u in absolute if u.startswith(("http://", "https://"))))
