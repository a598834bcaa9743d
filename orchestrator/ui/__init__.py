"""The Gradio chat app (``python gradio_app.py`` / ``python -m orchestrator ui``).

Importing this package is cheap: Gradio is imported when the app is built.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from ..errors import SpecError

if TYPE_CHECKING:
    import gradio as gr

    from ..engine import Orchestrator

__all__ = ["add_ui_arguments", "build_app", "launch", "launch_from_args"]
log = logging.getLogger(__name__)


def add_ui_arguments(parser: argparse.ArgumentParser) -> None:
    """The app's flags: what to load, which brain, and where to serve."""
    from ..cli import add_brain_arguments, add_common_arguments

    add_common_arguments(parser)
    add_brain_arguments(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument(
        "--auth", action="append", metavar="USER:PASSWORD", help="require a login (repeatable)"
    )
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="turns that may run at once per device the models use (default 1)")  # fmt: skip
    parser.add_argument("--warmup", action="store_true",
                        help="load and call every tool in the background as the app starts serving, so the first users "
                             "find the models loaded and, on CUDA, compiled (see the warmup command)")  # fmt: skip


def parse_auth(values: list[str] | None) -> list[tuple[str, str]]:
    pairs = []
    for value in values or []:
        user, sep, password = value.partition(":")
        if not sep or not user or not password:
            raise SpecError(f"--auth '{value}' must look like user:password.")
        pairs.append((user, password))
    return pairs


def launch_from_args(args: argparse.Namespace) -> int:
    """Build the orchestrator (nothing loads yet), build the app and serve until stopped. An exit code.

    A bad spec or --auth raises SpecError (exit 2 in orchestrator.cli.main)."""
    from ..cli import orchestrator_from_args

    auth = parse_auth(args.auth)
    orchestrator = orchestrator_from_args(args, session_root=args.session_dir)
    demo = build_app(orchestrator, per_device_concurrency=args.concurrency)
    if args.warmup:
        from ..warmup import warm_up_in_background

        warm_up_in_background(orchestrator)
    try:
        launch(demo, orchestrator, host=args.host, port=args.port, auth=auth, share=args.share)
    except OSError as exc:  # the port is taken, or the address cannot be bound
        print(
            f"error: cannot serve on {args.host}:{args.port} ({exc}); choose another --port.", file=sys.stderr
        )
        return 1
    return 0


def build_app(orchestrator: Orchestrator, **kwargs: Any) -> gr.Blocks:
    from .app import build_app as build

    return build(orchestrator, **kwargs)


def launch(demo: gr.Blocks, orchestrator: Orchestrator, **kwargs: Any) -> Any:
    from .app import launch as serve

    return serve(demo, orchestrator, **kwargs)
