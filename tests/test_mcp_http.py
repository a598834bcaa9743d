"""The MCP server's Streamable HTTP app (what ``serve`` mounts at /mcp), served by uvicorn on 127.0.0.1 in a
thread and driven by the SDK's own client: the same checks as stdio, a session per connection, the bearer key."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from orchestrator.engine import Orchestrator
from orchestrator.mcp_server import streamable_http_app
from tests.mcp_checks import LOAD, check_a_client_session
from tests.served_app import free_port

KEY = "test-key-123"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("mcp-sessions")


@pytest.fixture(scope="module")
def url(root) -> Iterator[str]:
    with Orchestrator(LOAD, weights="tiny", brain="rules", session_root=root) as orchestrator:
        port = free_port()
        config = uvicorn.Config(streamable_http_app(orchestrator, api_key=KEY), host="127.0.0.1", port=port,
                                log_level="warning")  # fmt: skip
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
        server.should_exit = True
        thread.join(10)


def connect(url: str, key: str = KEY):
    return streamable_http_client(
        url, http_client=create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    )


def test_an_mcp_client_uses_every_tool_over_streamable_http(url):
    async def client() -> None:
        with anyio.fail_after(120):
            async with connect(url) as (read, write), ClientSession(read, write) as session:
                await check_a_client_session(session)

    anyio.run(client)


def test_two_connections_never_see_each_others_images(url, root):
    async def client() -> None:
        with anyio.fail_after(60):
            async with connect(url) as (read, write), ClientSession(read, write) as first:
                await first.initialize()
                drawn = await first.call_tool("text2image", {"prompt": "a secret", "seed": 1})
                uri = str(drawn.content[2].uri)
                async with connect(url) as (read2, write2), ClientSession(read2, write2) as second:
                    await second.initialize()
                    assert (await second.list_resources()).resources == []
                    with pytest.raises(MCPError, match="no image"):
                        await second.read_resource(uri)
                    stolen = await second.call_tool("image2canny", {"image": uri})
                    assert stolen.is_error and "no image named" in stolen.content[0].text
                    folders = {p.name for p in root.iterdir()}
                    assert len(folders) >= 2
                for _ in range(100):  # the server closes the connection just after the client's DELETE
                    if len({p.name for p in root.iterdir()}) < len(folders):
                        break
                    await anyio.sleep(0.05)
                assert len({p.name for p in root.iterdir()}) == len(folders) - 1, (
                    "a closed connection's folder goes"
                )
                assert (await first.read_resource(uri)).contents, "the first connection still reads its own"

    anyio.run(client)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_a_missing_or_wrong_key_is_refused(url, headers):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "test", "version": "0"}}}  # fmt: skip
    accept = {"Accept": "application/json, text/event-stream"}
    response = httpx.post(url, json=initialize, headers={**accept, **headers}, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in response.json()["error"]
    good = httpx.post(url, json=initialize, headers={**accept, "Authorization": f"Bearer {KEY}"}, timeout=10)
    assert good.status_code == 200
