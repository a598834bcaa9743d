"""What the MCP layer adds to a tool call: the same calls direct (``Session.call_tool``), over stdio (a spawned
``mcp`` command) and over Streamable HTTP (uvicorn on 127.0.0.1), tiny weights on the CPU, so the tools are quick
and the difference is the protocol: JSON-RPC, the worker thread, the PNG sent back as base64.

    python -m benchmarks.mcp_overhead [--calls 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .measure import Table

LOAD = "Image2Canny_cpu,Text2Image_cpu"
CALLS = [("image2canny", None), ("text2image", {"prompt": "a red car", "seed": 1})]
ROOT = Path(__file__).resolve().parents[1]


def direct(calls: int) -> dict[str, float]:
    """In a worker thread, as a turn's tool calls and the MCP server run them (on this CPU the main thread ran
    tiny text2image 3-5x slower than any worker thread did)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as worker:
        return worker.submit(_direct, calls).result()


def _direct(calls: int) -> dict[str, float]:
    from orchestrator import Orchestrator

    with Orchestrator(LOAD, weights="tiny", brain="rules", session_root=tempfile.mkdtemp()) as orchestrator:
        session = orchestrator.new_session()
        drawn = session.call_tool("text2image", {"prompt": "warm-up"}).images[0]

        def one(tool: str, args: dict[str, Any] | None) -> None:
            call = session.call_tool(tool, args or {"image": drawn})
            assert call.error is None, call.error

        return {tool: _median(calls, lambda t=tool, a=args: one(t, a)) for tool, args in CALLS}


async def over_mcp(session: Any, calls: int) -> dict[str, float]:
    await session.initialize()
    drawn = await session.call_tool("text2image", {"prompt": "warm-up"})
    uri = str(drawn.content[2].uri)
    out = {}
    for tool, args in CALLS:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            result = await session.call_tool(tool, args or {"image": uri})
            times.append(time.perf_counter() - started)
            assert not result.is_error, result.content
        out[tool] = statistics.median(times) * 1000
    return out


def stdio(calls: int) -> dict[str, float]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    command = ["-m", "orchestrator", "mcp", "--load", LOAD, "--weights", "tiny"]
    server = StdioServerParameters(command=sys.executable, args=command, cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip

    async def run() -> dict[str, float]:
        with open(os.devnull, "w") as errlog:
            async with (
                stdio_client(server, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                return await over_mcp(session, calls)

    return _anyio_run(run)


def http(calls: int) -> dict[str, float]:
    import socket

    import uvicorn
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    from orchestrator import Orchestrator
    from orchestrator.mcp_server import streamable_http_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Orchestrator(LOAD, weights="tiny", brain="rules", session_root=tempfile.mkdtemp()) as orchestrator:
        server = uvicorn.Server(
            uvicorn.Config(streamable_http_app(orchestrator), port=port, log_level="warning")
        )
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)

        async def run() -> dict[str, float]:
            async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write):
                async with ClientSession(read, write) as session:
                    return await over_mcp(session, calls)

        try:
            return _anyio_run(run)
        finally:
            server.should_exit = True


def _anyio_run(fn: Callable[[], Awaitable[dict[str, float]]]) -> dict[str, float]:
    import anyio

    return anyio.run(fn)


def _median(calls: int, fn: Callable[[], None]) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def table(calls: int) -> Table:
    results = {"direct Session.call_tool": direct(calls), "MCP over stdio": stdio(calls),
               "MCP over Streamable HTTP": http(calls)}  # fmt: skip
    base = results["direct Session.call_tool"]
    out = Table(f"One tool call over MCP (median of {calls} calls, ms; tiny weights, CPU)",
                ["path", *[f"{tool} ms" for tool, _ in CALLS], *[f"{tool} added ms" for tool, _ in CALLS]])  # fmt: skip
    for path, times in results.items():
        out.add(path, *[times[t] for t, _ in CALLS], *[times[t] - base[t] for t, _ in CALLS])
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20)
    print(table(parser.parse_args().calls).markdown())
