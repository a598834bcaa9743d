"""What every MCP transport must show a client, driven through the SDK's own ``ClientSession``."""

from __future__ import annotations

import base64
import io

from mcp import ClientSession
from PIL import Image

from orchestrator.cards import load_cards
from orchestrator.toolbox import all_tools

LOAD = "Image2Canny_cpu,Text2Image_cpu"


def expected_tools() -> dict[str, tuple[str, dict]]:
    return {
        t.name: (t.description, t.schema())
        for t in all_tools(load_cards())
        if t.card in ("Image2Canny", "Text2Image")
    }


def photo_base64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def check_a_client_session(session: ClientSession) -> str:
    """Tools with their exact schemas, a drawing with progress, its resource, an upload, an error that leaves
    the session working. Returns the URI of the drawing."""
    await session.initialize()
    listed = (await session.list_tools()).tools
    assert {t.name: (t.description, t.input_schema) for t in listed} == expected_tools()

    steps: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append((progress, total))

    drawn = await session.call_tool(
        "text2image", {"prompt": "a red car", "seed": 3}, progress_callback=on_progress
    )
    assert not drawn.is_error, drawn.content
    text, image, link = drawn.content
    assert text.type == "text" and "image/" in text.text
    assert image.type == "image" and image.mime_type == "image/png"
    assert Image.open(io.BytesIO(base64.b64decode(image.data))).format == "PNG"
    assert link.type == "resource_link" and str(link.uri).startswith("image://")
    assert steps and steps[-1][0] == steps[-1][1], "the diffusion steps come as progress notifications"

    read = (await session.read_resource(link.uri)).contents[0]
    assert base64.b64decode(read.blob) == base64.b64decode(image.data)
    assert str(link.uri) in {str(r.uri) for r in (await session.list_resources()).resources}

    for given in (f"data:image/png;base64,{photo_base64()}", photo_base64(), str(link.uri)):
        edges = await session.call_tool("image2canny", {"image": given})
        assert not edges.is_error, edges.content
        assert [c.type for c in edges.content] == ["text", "image", "resource_link"]

    missing = await session.call_tool("image2canny", {"image": "image/deadbeef.png"})
    assert missing.is_error
    assert "no image named 'image/deadbeef.png'" in missing.content[0].text
    assert missing.content[0].text.count(". ") == 0 and missing.content[0].text.endswith(".")
    garbled = await session.call_tool("image2canny", {"image": "not base64! " * 10})
    assert garbled.is_error and "valid base64" in garbled.content[0].text
    wrong = await session.call_tool("text2image", {"prompt": "a car", "colour": "red"})
    assert wrong.is_error and "no argument 'colour'" in wrong.content[0].text

    again = await session.call_tool("text2image", {"prompt": "a blue car", "seed": 4})
    assert not again.is_error, "the session goes on after an error"
    return str(link.uri)
