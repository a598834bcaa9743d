"""``python -m orchestrator mcp`` over stdio, as an MCP client spawns it, driven by the SDK's own client."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from orchestrator.cli import main
from tests.mcp_checks import LOAD, check_a_client_session

ROOT = Path(__file__).resolve().parents[1]


def test_an_mcp_client_uses_every_tool_over_stdio(tmp_path):
    command = [
        "-m",
        "orchestrator",
        "mcp",
        "--load",
        LOAD,
        "--weights",
        "tiny",
        "--session-dir",
        str(tmp_path),
    ]
    server = StdioServerParameters(command=sys.executable, args=command, cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip

    async def client() -> None:
        with anyio.fail_after(120), open(tmp_path / "stderr.log", "w") as errlog:
            async with (
                stdio_client(server, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await check_a_client_session(session)

    anyio.run(client)
    assert len(list((tmp_path / "image").glob("*.png"))) == 7, "--session-dir keeps the connection's images"


def test_serving_beyond_this_machine_without_a_key_is_refused(capsys):
    assert main(["mcp", "--http", "--host", "0.0.0.0", "--load", LOAD, "--weights", "tiny"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --host 0.0.0.0") and "--api-key" in error and error.count("\n") == 0
