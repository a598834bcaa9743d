"""``visual-orchestrator run``: one session, one user turn per MESSAGE, as a transcript or one JSON object.

    python -m orchestrator run --load Text2Image_cpu --weights tiny --json "draw a red car"

Exit code 0 on success, 2 on bad arguments or a --load spec that cannot be placed, 1 otherwise (the
brain could not answer, an upload was refused, an unexpected failure).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..brain import BrainError
from ..errors import OrchestratorError, SpecError
from ..events import (
    Event,
    Notice,
    ReplyDelta,
    ToolFinished,
    ToolProgress,
    ToolStarted,
    TurnFinished,
    TurnResult,
)
from .common import add_brain_arguments, add_common_arguments, fail, orchestrator_from_args, persona_from_args

log = logging.getLogger(__name__)


def add_run_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("run", help="chat from the command line: one turn per MESSAGE",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("message", nargs="+", metavar="MESSAGE", help="one user turn each, in order")
    add_common_arguments(parser)
    add_brain_arguments(parser)
    parser.add_argument(
        "--image", action="append", default=[], metavar="PATH", help="upload before the first turn"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a transcript")
    parser.set_defaults(handler=run_command)
    return parser


def run_command(args: argparse.Namespace) -> int:
    for path in args.image:
        if not Path(path).is_file():
            return fail(2, f"--image {path}: there is no such file.")
    try:
        orchestrator = orchestrator_from_args(args)
        session = orchestrator.new_session(args.session_dir)
        session.use_persona(persona_from_args(args, orchestrator))
    except (SpecError, BrainError) as exc:
        return fail(2, str(exc))
    except OrchestratorError as exc:
        return fail(1, str(exc))
    results: list[TurnResult] = []
    try:
        for index, message in enumerate(args.message):
            images = args.image if index == 0 else []
            if not args.json:
                _out(f"you: {message}")
            transcript = Transcript(session.folder)
            for event in session.stream(message, images):
                if isinstance(event, TurnFinished):
                    results.append(event.result)
                if not args.json:
                    transcript.show(event)
                elif isinstance(event, Notice):
                    print(f"note: {event.text}", file=sys.stderr)
    except KeyboardInterrupt:
        return fail(1, "interrupted.")
    if args.json:
        print(json.dumps(_as_json(results, session.folder), ensure_ascii=False, indent=1))
    return 1 if any(r.error for r in results) else 0


def _as_json(results: list[TurnResult], folder: Path) -> dict[str, Any]:
    folder = folder.resolve()
    turns = [
        {
            "user": r.user,
            "reply": r.reply,
            "images": [str(folder / name) for name in r.images],
            "tool_calls": [
                {
                    "tool": c.tool,
                    "args": c.args,
                    "output": c.output,
                    "images": [str(folder / n) for n in c.images],
                    "error": c.error,
                    "seconds": round(c.seconds, 3),
                }  # fmt: skip
                for c in r.tool_calls
            ],
        }
        for r in results
    ]
    return {"turns": turns, "session_dir": str(folder)}


class Transcript:
    """Prints a turn's events as they come; the reply is written piece by piece on its own ``assistant:`` line."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.writing = False  # an ``assistant:`` line is open

    def show(self, event: Event) -> None:
        if isinstance(event, ReplyDelta):
            if event.replace and self.writing:  # the turn ended otherwise than streamed: the reply anew
                self._end_line()
            if not self.writing:
                sys.stdout.write("assistant: ")
                self.writing = True
            sys.stdout.write(event.text)
            sys.stdout.flush()
            return
        if self.writing:
            self._end_line()
        if isinstance(event, Notice):
            _out(f"note: {event.text}")
        elif isinstance(event, ToolStarted):
            _out(f"  -> {event.tool} {json.dumps(event.args, ensure_ascii=False, default=str)}")
        elif isinstance(event, ToolProgress) and event.step is None:
            _out(f"     {event.message}")
        elif isinstance(event, ToolFinished):
            call = event.call
            outcome = f"error: {call.error}" if call.error else ", ".join(call.images) or call.output
            _out(f"  <- {call.tool} ({call.seconds:.1f} s) {outcome}")
        elif isinstance(event, TurnFinished):
            for name in event.result.images:
                _out(f"  image: {(self.folder / name).resolve()}")
            _out("")

    def _end_line(self) -> None:
        _out("")
        self.writing = False


def _out(text: str) -> None:
    print(text, flush=True)
