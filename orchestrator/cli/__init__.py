"""Command line: ``python -m orchestrator {run,tools,plan,download,weights,warmup,ui,serve,mcp,knowledge,traces,finetune}`` (also the
``visual-orchestrator`` script).

One module per command: plan (placement and VRAM, loading nothing), tools (the tools a --load spec exposes),
run (chat, one turn per message), weights (download / weights: fetch the cards' checkpoints, or check they are
on disk), warmup (load and call every tool ahead of serving, filling the torch.compile cache on CUDA), ui (the
Gradio app), serve (the OpenAI-compatible API), mcp (the tools as an MCP server, stdio or Streamable HTTP),
knowledge (the knowledge bases: add, list, search, remove documents), traces (tool-using turns as training data),
finetune (an adapter for an hf: brain, peft + TRL); common holds the flags they share.

Exit codes: 0 success, 2 bad arguments or a spec that cannot be placed, 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import OrchestratorError, SpecError
from .common import orchestrator_from_args
from .finetune import add_finetune_parser
from .knowledge import add_knowledge_parser
from .mcp import add_mcp_parser
from .plan import add_plan_parser
from .run import add_run_parser
from .serve import add_serve_parser
from .tools import add_tools_parser
from .traces import add_traces_parser
from .ui import add_ui_parser
from .warmup import add_warmup_parser
from .weights import add_weights_parsers

__all__ = ["build_parser", "main", "orchestrator_from_args"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visual-orchestrator", description="A chat agent that sees and draws."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what loads and runs")
    sub = parser.add_subparsers(dest="command", required=True)
    add_plan_parser(sub)
    add_tools_parser(sub)
    add_run_parser(sub)
    add_weights_parsers(sub)
    add_warmup_parser(sub)
    add_ui_parser(sub)
    add_serve_parser(sub)
    add_knowledge_parser(sub)
    add_mcp_parser(sub)
    add_traces_parser(sub)
    add_finetune_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    # The app logs what loads and runs (a server's console); the other commands only warnings unless -v.
    verbose = args.verbose or args.command in ("ui", "serve")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.WARNING)
    # Per-file loading bars are noise here; downloads keep theirs.
    if args.command in ("run", "ui", "warmup", "serve", "mcp"):
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return args.handler(args)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
