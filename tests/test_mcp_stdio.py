"""``python -m orchestrator mcp`` over stdio, as an MCP client spawns it, driven by the SDK's own client."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from orchestrator.cli import main
from tests.mcp_checks import LOAD, check_a_client_session, photo_base64

ROOT = Path(__file__).resolve().parents[1]


def spawned(tmp_path: Path, *flags: str) -> Callable[[Callable[[ClientSession], Awaitable[Any]]], None]:
    """Runs a check against ``python -m orchestrator mcp FLAGS`` spawned as an MCP client spawns it."""
    server = StdioServerParameters(command=sys.executable, args=["-m", "orchestrator", "mcp", *flags], cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip

    def run(check: Callable[[ClientSession], Awaitable[Any]]) -> None:
        async def client() -> None:
            with anyio.fail_after(120), open(tmp_path / "stderr.log", "w") as errlog:
                async with (
                    stdio_client(server, errlog=errlog) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await check(session)

        anyio.run(client)

    return run


def test_an_mcp_client_uses_every_tool_over_stdio(tmp_path):
    spawned(tmp_path, "--load", LOAD, "--weights", "tiny", "--session-dir", str(tmp_path))(
        check_a_client_session
    )
    assert len(list((tmp_path / "image").glob("*.png"))) == 7, "--session-dir keeps the connection's images"


def test_serving_beyond_this_machine_without_a_key_is_refused(capsys):
    assert main(["mcp", "--http", "--host", "0.0.0.0", "--load", LOAD, "--weights", "tiny"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --host 0.0.0.0") and "--api-key" in error and error.count("\n") == 0


def test_a_missing_checkpoint_is_a_tool_error_and_the_server_goes_on(tmp_path):
    async def check(session: ClientSession) -> None:
        await session.initialize()
        missing = await session.call_tool("text2image", {"prompt": "a red car"})
        assert missing.is_error
        assert "stable-diffusion-v1-5" in missing.content[0].text
        assert "python -m orchestrator download --load Text2Image_cpu" in missing.content[0].text
        edges = await session.call_tool("image2canny", {"image": photo_base64()})
        assert not edges.is_error, "a tool whose model needs no checkpoint still works"

    spawned(tmp_path, "--load", LOAD, "--weights", "hub", "--model-dir", str(tmp_path / "empty"))(check)
