"""``visual-orchestrator traces export``: saved sessions' successful turns (and synthesized ones) as chat JSONL.

python -m orchestrator traces export --out traces.jsonl
python -m orchestrator traces export --synthesize 300 --out traces.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..settings import Settings
from .common import fail


def add_traces_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("traces", help="export tool-using turns as training data (chat JSONL)")
    actions = parser.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="successful turns of saved sessions, deduplicated, as JSONL")
    export.add_argument(
        "--sessions", metavar="DIR", help="the sessions folder (default: the cache's sessions/)"
    )
    export.add_argument("--out", default="traces.jsonl", metavar="FILE")
    export.add_argument("--synthesize", type=int, default=0, metavar="N",
                        help="add N requests made from templates for every tool, English and Chinese")  # fmt: skip
    export.add_argument("--no-system", dest="system", action="store_false",
                        help="synthesized traces without the system prompt (shorter sequences)")  # fmt: skip
    export.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=traces_command)
    return parser


def traces_command(args: argparse.Namespace) -> int:
    from ..cards import load_cards
    from ..finetune.synth import synthesize
    from ..finetune.traces import dedupe, session_traces, write_jsonl
    from ..toolbox import all_tools

    sessions = Path(args.sessions) if args.sessions else Settings.from_env().sessions_dir
    if args.sessions and not sessions.is_dir():
        return fail(
            2, f"No sessions folder {sessions}; pass the folder your sessions are saved in (--session-dir)."
        )
    saved = list(session_traces(sessions)) if sessions.is_dir() else []
    made = (
        synthesize(args.synthesize, all_tools(load_cards()), seed=args.seed, system=args.system)
        if args.synthesize > 0
        else []
    )
    traces = dedupe([*saved, *made])
    if not traces:
        return fail(1, f"No successful tool-using turns under {sessions}; add --synthesize N to make some.")
    write_jsonl(traces, Path(args.out))
    print(
        f"wrote {len(traces)} traces to {args.out} ({len(dedupe(saved))} from sessions, {len(made)} synthesized)"
    )
    return 0
