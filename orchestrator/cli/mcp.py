"""``visual-orchestrator mcp``: the tools as an MCP server, over stdio (default) or Streamable HTTP.

    python -m orchestrator mcp --load "Image2Canny_cpu,Text2Image_cpu" --weights tiny
    python -m orchestrator mcp --http --port 8765 --load Text2Image_cuda:0

Over stdio the client spawns this command and stdout carries the protocol only. Over HTTP the endpoint is
http://HOST:PORT/mcp; binding beyond this machine needs --api-key (clients send it as a bearer token).
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_common_arguments, fail, settings_from_args

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_mcp_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("mcp", help="serve the tools to MCP clients (stdio, or --http)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_common_arguments(parser)
    parser.add_argument("--session-dir", metavar="DIR", help="where sessions keep their images")
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP at /mcp instead of stdio")
    parser.add_argument("--host", default="127.0.0.1", help="with --http: address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="with --http: port (default 8765)")
    parser.add_argument(
        "--api-key", metavar="KEY", help="with --http: the bearer key every request must carry"
    )
    parser.set_defaults(handler=mcp_command)
    return parser


def mcp_command(args: argparse.Namespace) -> int:
    """Serve until the client closes stdin (stdio) or until interrupted (HTTP). An exit code."""
    import anyio

    from ..engine import Orchestrator
    from ..mcp_server import serve_stdio, streamable_http_app

    if args.http and args.host not in LOCAL_HOSTS and not args.api_key:
        return fail(
            2, f"--host {args.host} serves beyond this machine: give --api-key KEY, or keep 127.0.0.1."
        )
    # MCP clients bring their own LLM: the orchestrator only runs tools, so it needs no brain of its own.
    settings = settings_from_args(args, session_root=args.session_dir if args.http else None)
    with Orchestrator(args.load, settings=settings, max_vram=args.max_vram, brain="rules") as orchestrator:
        if not args.http:
            anyio.run(serve_stdio, orchestrator, args.session_dir)
            return 0
        import uvicorn

        app = streamable_http_app(orchestrator, args.api_key, host=args.host)
        try:
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        except OSError as exc:
            return fail(1, f"cannot serve on {args.host}:{args.port} ({exc}); choose another --port.")
    return 0
