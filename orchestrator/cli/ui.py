"""``visual-orchestrator ui`` (and gradio_app.py): the app's flags, and serving it until stopped."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import SpecError
from .common import (
    add_brain_arguments,
    add_common_arguments,
    add_ray_arguments,
    orchestrator_from_args,
    persona_from_args,
)
from .serve import add_api_arguments, api_key_from_args, api_options_from_args, run_server


def add_ui_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("ui", help="start the Gradio app (same as gradio_app.py)")
    add_ui_arguments(parser)
    parser.set_defaults(handler=launch_from_args)
    return parser


def add_ui_arguments(parser: argparse.ArgumentParser) -> None:
    """The app's flags: what to load, which brain, and where to serve."""
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
    parser.add_argument("--api", action="store_true",
                        help="also serve the OpenAI-compatible API at /v1 of the same port (see the serve command)")  # fmt: skip
    add_api_arguments(parser)
    add_ray_arguments(parser)
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
    from ..ui import build_app, launch

    auth = parse_auth(args.auth)
    orchestrator = orchestrator_from_args(args, session_root=args.session_dir)
    persona = persona_from_args(args, orchestrator)  # an unknown one is a SpecError: exit 2 before serving
    demo = build_app(
        orchestrator, per_device_concurrency=args.concurrency, persona=persona.name if persona else None
    )
    if args.warmup:
        from ..warmup import warm_up_in_background

        warm_up_in_background(orchestrator)
    if args.api:
        return _serve_with_api(args, orchestrator, demo, auth)
    try:
        launch(demo, orchestrator, host=args.host, port=args.port, auth=auth, share=args.share)
    except OSError as exc:  # the port is taken, or the address cannot be bound
        print(
            f"error: cannot serve on {args.host}:{args.port} ({exc}); choose another --port.", file=sys.stderr
        )
        return 1
    return 0


def _serve_with_api(
    args: argparse.Namespace, orchestrator: Any, demo: Any, auth: list[tuple[str, str]]
) -> int:
    """The chat app and the API in one process, on one port."""

    from ..api import create_app, refuse_public_without_key
    from ..ui import mount

    api_key = api_key_from_args(args)
    refusal = refuse_public_without_key(args.host, api_key)
    if refusal:
        raise SpecError(refusal)
    app = mount(demo, orchestrator, create_app(orchestrator, api_options_from_args(args, api_key)), auth=auth,
                host=args.host, port=args.port)  # fmt: skip
    print(
        f"chat app on http://{args.host}:{args.port}/ and the API on http://{args.host}:{args.port}/v1",
        flush=True,
    )
    return run_server(app, args.host, args.port)
