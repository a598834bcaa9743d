"""``visual-orchestrator knowledge {add,list,search,remove}``: the knowledge bases on disk.

python -m orchestrator knowledge add --kb papers paper.pdf notes.md
python -m orchestrator knowledge search --kb papers --top-k 3 "cloud-top temperature"
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..settings import Settings
from .common import table


def add_knowledge_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "knowledge", help="knowledge bases: add, list, search and remove documents"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    add = _action(actions, "add", "add (or re-index changed) documents: PDF, DOCX, HTML, Markdown, text")
    add.add_argument("files", nargs="+", metavar="FILE")
    add.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    listing = _action(actions, "list", "the bases, or the files of one", kb_required=False)
    search = _action(actions, "search", "the passages that answer a question, with their sources")
    search.add_argument("question")
    search.add_argument("--top-k", type=int, default=4, metavar="K")
    remove = _action(actions, "remove", "remove a file (its path, or its name when unique)")
    remove.add_argument("file")
    for sub in (listing, search):
        sub.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=knowledge_command)
    return parser


def _action(actions: Any, name: str, text: str, kb_required: bool = True) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=text, description=text)
    parser.add_argument("--kb", required=kb_required, metavar="NAME", help="the knowledge base")
    parser.add_argument(
        "--root", metavar="DIR", help="the folder of the bases (default: the cache's knowledge/)"
    )
    parser.add_argument("--embedder", metavar="CARD",
                        help="the embedding card: TextEmbedding (multilingual, hub; the default for a new base) "
                             "or TextEmbeddingEnglish (all-MiniLM-L6-v2 from PyPI, offline); an existing base "
                             "uses the one that built it")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="where the embedder runs (cpu, cuda:0, auto)")
    parser.add_argument("--weights", choices=["hub", "tiny"], default="hub")
    parser.add_argument("--model-dir", metavar="DIR", help="local checkpoints laid out as DIR/org/name")
    return parser


def knowledge_command(args: argparse.Namespace) -> int:
    from ..engine import Orchestrator

    settings = Settings.from_env(weights=args.weights, model_dir=args.model_dir, knowledge_root=args.root)
    if args.action == "list" and not args.kb:
        return _list_bases(settings)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    card = args.embedder or _embedder_of(settings, args.kb)
    with Orchestrator(f"{card}_{args.device}", settings=settings, brain="rules") as orch:
        kb = orch.knowledge.get(args.kb, create=args.action == "add")
        if args.action == "add":
            return _add(kb, orch.embedder(card), args.files, args.progress)
        if args.action == "list":
            return _list_files(kb, args.json)
        if args.action == "remove":
            print(f"removed {kb.remove(args.file)} from {kb.name}")
            return 0
        hits = kb.search(args.question, orch.embedder(card), max(1, args.top_k))
    if args.json:
        print(json.dumps([h.as_dict() for h in hits], indent=2, ensure_ascii=False))
    for hit in [] if args.json else hits:
        print(f"[{hit.n}] {hit.source}  (chars {hit.start}-{hit.end}, score {hit.score:.4f})")
        print("    " + " ".join(hit.text.split()) + "\n")
    if not hits and not args.json:
        print(f"nothing in {kb.name} matches that question")
    return 0


def _embedder_of(settings: Settings, name: str) -> str:
    """The card whose checkpoint built the base, else the multilingual default."""
    from ..cards import load_cards
    from ..knowledge import KnowledgeBase, check_name

    kb = KnowledgeBase(settings.knowledge_dir / check_name(name))
    built = kb.embedder_name
    kb.close()
    cards = [c.name for c in load_cards().cards.values() if c.family == "text_embedding"]
    return next((c for c in cards if load_cards()[c].checkpoints.get("model") == built), "TextEmbedding")


def _add(kb: Any, embedder: Any, files: list[str], progress: bool) -> int:
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        if not progress:
            return
        bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, unit="chunk"
                                                             if stage == "embedding" else "file"))  # fmt: skip
        bar.total = total
        bar.update(done - bar.n)

    try:
        result = kb.add(files, embedder, report)
    finally:
        for bar in bars.values():
            bar.close()
    print(f"{kb.name}: {len(result.added)} added, {len(result.updated)} re-indexed, {len(result.unchanged)} "
          f"unchanged; {result.chunks} chunks in {result.seconds:.1f} s")  # fmt: skip
    return 0


def _list_files(kb: Any, as_json: bool) -> int:
    files = kb.files()
    if as_json:
        print(json.dumps([f.__dict__ for f in files], indent=2, ensure_ascii=False))
        return 0
    rows = [("file", "pages", "chunks", "bytes", "path")]
    rows += [(f.name, str(f.pages), str(f.chunks), str(f.bytes), f.path) for f in files]
    print("\n".join(table(rows)) if files else f"{kb.name} holds no files")
    return 0


def _list_bases(settings: Settings) -> int:
    from ..knowledge import Shelf

    shelf = Shelf(settings.knowledge_dir)
    names = shelf.names()
    rows = [("knowledge base", "files", "chunks", "embedder")]
    for name in names:
        kb = shelf.get(name)
        files = kb.files()
        rows.append((name, str(len(files)), str(sum(f.chunks for f in files)), kb.embedder_name or "-"))
    print("\n".join(table(rows)) if names else f"no knowledge bases in {settings.knowledge_dir}")
    shelf.close()
    return 0
