"""``visual-orchestrator serve``: the OpenAI-compatible API, for NextChat, Open WebUI, LobeChat and scripts.

    python -m orchestrator serve --load ImageCaptioning_cuda:0,Text2Image_cuda:0 --port 8000
    python -m orchestrator serve --ray --address auto      # the models on Ray Serve (docs/scale-out.md)

Bound to 127.0.0.1 unless --host says otherwise, and then only with an API key. See docs/api.md.
"""

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
    settings_from_args,
)


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("serve", help="serve the OpenAI-compatible API (chat apps, scripts)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_common_arguments(parser)
    add_brain_arguments(parser)
    add_api_arguments(parser)
    add_ray_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000)")
    parser.set_defaults(handler=serve_command)
    return parser


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """The API's flags (also ``ui --api``)."""
    parser.add_argument("--api-key", metavar="KEY",
                        help="require 'Authorization: Bearer KEY' (or set VISUAL_ORCHESTRATOR_API_KEY)")  # fmt: skip
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="a browser origin allowed to call the API, e.g. http://localhost:3000 (repeatable)")  # fmt: skip
    parser.add_argument("--allow-image-urls", action="store_true",
                        help="fetch http(s) image URLs in messages (public addresses only, upload limits)")  # fmt: skip
    parser.add_argument(
        "--public-url", metavar="URL", help="the URL clients reach this server by (for image links)"
    )
    parser.add_argument("--max-body-mb", type=int, default=25, help="largest request body (default 25)")
    parser.add_argument("--turns-in-flight", type=int, default=2, metavar="N",
                        help="turns one key may run at once (default 2)")  # fmt: skip
    parser.add_argument("--no-mcp", action="store_true", help="no MCP server at /mcp (Streamable HTTP)")


def api_options_from_args(args: argparse.Namespace, api_key: str | None) -> Any:
    from ..api import ApiOptions

    return ApiOptions(api_key=api_key, cors_origins=tuple(args.cors_origin), allow_image_urls=args.allow_image_urls,
                      public_url=args.public_url, max_body_bytes=args.max_body_mb * 2**20,
                      max_turns_in_flight=args.turns_in_flight, mcp=not args.no_mcp, host=args.host)  # fmt: skip


def api_key_from_args(args: argparse.Namespace) -> str | None:
    return args.api_key or settings_from_args(args).api_key


def serve_command(args: argparse.Namespace) -> int:

    from ..api import create_app, refuse_public_without_key

    api_key = api_key_from_args(args)
    refusal = refuse_public_without_key(args.host, api_key)
    if refusal:
        raise SpecError(refusal)
    orchestrator = orchestrator_from_args(args, session_root=args.session_dir)
    app = create_app(orchestrator, api_options_from_args(args, api_key))
    mcp = "" if args.no_mcp else f", MCP on http://{args.host}:{args.port}/mcp"
    print(f"OpenAI-compatible API on http://{args.host}:{args.port}/v1{mcp}", flush=True)
    return run_server(app, args.host, args.port)


def run_server(app: Any, host: str, port: int) -> int:
    """Serve ``app`` with uvicorn until stopped; an exit code (1, with one line, when the port cannot be had)."""
    import uvicorn

    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    except OSError as exc:
        print(f"error: cannot serve on {host}:{port} ({exc}); choose another --port.", file=sys.stderr)
        return 1
    return 0
