"""The knowledge-base tool: search the user's own documents and hand back the passages with their sources."""

from __future__ import annotations

from typing import Annotated

from ..errors import ToolError
from ..knowledge import numbered, observation
from ..tools import ToolContext, tool

MAX_TOP_K = 10


@tool(card="TextEmbedding")
def knowledge_search(
    ctx: ToolContext,
    question: Annotated[str, "What to look up, in the user's words (any language)"],
    kb: Annotated[str | None, "The knowledge base to search; leave empty for the one the user picked"] = None,
    top_k: Annotated[int, "How many passages to return (1-10)"] = 4,
) -> str:
    """Search the user's own documents (knowledge bases of their PDFs, Word, Markdown, HTML and text files)
    for passages about a question; with no base named or picked, it searches all of them. Use it whenever the user asks what their documents, files, paper or notes
    say; answer from the passages and cite them as [n] with the file and page the result gives."""
    if not question.strip():
        raise ToolError("knowledge_search needs a question; it was empty.")
    picked = kb or ctx.knowledge_base
    names = [picked] if picked else ctx.knowledge.names()  # none picked: every base there is
    bases = [ctx.knowledge.get(name) for name in names]
    top_k = max(1, min(MAX_TOP_K, top_k))
    with ctx.model() as embedder:
        query = embedder.encode([question], "query")[0]
        usable = [b for b in bases if b.embedder_name in (None, embedder.name)] if not picked else bases
        hits = [h for b in usable for h in b.search(question, embedder, top_k, query=query)]
    label = ", ".join(names) or "-"
    if not any(b.files() for b in bases):
        return observation(label, question, [], empty=True)
    hits = numbered(sorted(hits, key=lambda h: -h.score)[:top_k])
    for hit in hits:
        ctx.cite(hit.source)
    return observation(label, question, hits)


TOOLS = [knowledge_search]
