"""Issue 20: ``serve``, the OpenAI-compatible API, driven by the real ``openai`` client.

The orchestrator runs tiny weights; its brain is tests/scripted_llm.py over HTTP, so what goes through the API
is the real turn loop. Checked: the shapes the client parses (streamed and not), images in and out as the chat
apps show them, a follow-up that finds the earlier image from the URL in the history the client sends, personas
as models, keys, limits, and a client that goes away mid-stream.
"""

from __future__ import annotations

import base64
import io
import re
import threading
import time

import httpx
import openai
import pytest
from PIL import Image, ImageDraw
from scripted_llm import ScriptedLLM, Stream, reply, tool_call
from served_app import served_api

from orchestrator import Orchestrator

LOAD = "Image2Canny_cpu,Text2Image_cpu,ImageCaptioning_cpu"
NEWEST = re.compile(r"(?:Newest image|最新图片)[:：] ?(image/[0-9a-f]{8}\.png)")
IMAGE_URL = re.compile(r"!\[(image/[0-9a-f]{8}\.png)\]\((http://[^)]+)\)")
KEY = "sk-test-key"


def newest(request: dict) -> str:
    return NEWEST.search(request["messages"][0]["content"]).group(1)


def photo_data_url(color: str = "orange", box: tuple[int, int, int, int] = (20, 20, 60, 50)) -> str:
    image = Image.new("RGB", (128, 96), "white")
    ImageDraw.Draw(image).rectangle(box, fill=color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def llm():
    with ScriptedLLM() as server:
        yield server


@pytest.fixture
def script(llm):
    llm.script.clear()
    llm.requests.clear()
    llm.disconnects = 0
    return llm


@pytest.fixture(scope="module")
def orch(llm, tmp_path_factory):
    options = {"base_url": llm.url, "api_key": "k", "max_retries": 0}
    return Orchestrator(LOAD, weights="tiny", brain="openai", brain_options=options,
                        session_root=tmp_path_factory.mktemp("api-sessions"))  # fmt: skip


@pytest.fixture(scope="module")
def api(orch):
    with served_api(orch, api_key=KEY, max_turns_in_flight=1, max_body_bytes=2 * 2**20) as url:
        yield url


@pytest.fixture
def client(api):
    return openai.OpenAI(base_url=api, api_key=KEY, max_retries=0, timeout=60)


def test_models_are_the_plain_one_and_every_persona(client):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "visual-orchestrator" and {"artist", "huashi", "photo-editor", "kantu"} <= set(ids)


def test_a_turn_draws_and_the_reply_shows_the_step_and_the_image(client, script):
    script.add(
        tool_call("text2image", prompt="a red car", seed=1), lambda r: reply(f"Here it is: {newest(r)}")
    )
    answer = client.chat.completions.create(model="visual-orchestrator",
                                            messages=[{"role": "user", "content": "draw a red car"}])  # fmt: skip
    content = answer.choices[0].message.content
    assert answer.object == "chat.completion" and answer.choices[0].finish_reason == "stop"
    assert "<details><summary>🛠️ text2image" in content and "**prompt**: `a red car`" in content
    [(name, url)] = IMAGE_URL.findall(content)
    assert content.rstrip().endswith(f"Here it is: {name}")
    png = httpx.get(url)  # as a chat app's <img> fetches it: no header, the URL's signature
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (64, 64)
    bare = url.split("?")[0]
    assert httpx.get(bare).status_code == 404  # neither the key nor the signature
    assert httpx.get(bare, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(url.replace(url.split("/")[-1][:10], "A" * 10)).status_code == 404  # guessing fails


def test_streamed_reply_comes_in_chunks_in_the_openai_shape(client, script):
    script.add(Stream(["It ", "is ", "a ", "small ", "world."]))
    stream = client.chat.completions.create(model="visual-orchestrator", stream=True,
                                            messages=[{"role": "user", "content": "say something"}])  # fmt: skip
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) >= 4 and "".join(pieces) == "It is a small world."
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[0].object == "chat.completion.chunk"


def test_an_uploaded_image_then_a_follow_up_on_the_image_the_reply_showed(client, script):
    script.add(
        lambda r: tool_call("image2canny", image=newest(r)), lambda r: reply(f"The edges: {newest(r)}")
    )
    first_messages = [{"role": "user", "content": [{"type": "text", "text": "show me the edges"},
                                                   {"type": "image_url", "image_url": {"url": photo_data_url()}}]}]  # fmt: skip
    first = client.chat.completions.create(model="visual-orchestrator", messages=first_messages)
    content = first.choices[0].message.content
    [(edges_name, _)] = IMAGE_URL.findall(content)
    call = script.requests[0]["tools"]
    assert call and "uploaded an image named" in script.requests[0]["messages"][-1]["content"]

    seen = {}

    def follow_up(request):
        history = " ".join(str(m.get("content")) for m in request["messages"][1:])
        seen["names"] = re.findall(r"image/[0-9a-f]{8}\.png", history)
        return tool_call("image2canny", image=seen["names"][-1])

    script.add(follow_up, lambda r: reply(f"Edges of the edges: {newest(r)}"))
    again = client.chat.completions.create(model="visual-orchestrator", messages=[
        *first_messages, {"role": "assistant", "content": content},
        {"role": "user", "content": "now trace those edges again"}])  # fmt: skip
    second = again.choices[0].message.content
    assert "❌" not in second and len(IMAGE_URL.findall(second)) == 1  # the tool found the earlier image
    assert edges_name not in seen["names"]  # renamed into this request's own session, not the old one
    assert "<details>" not in str(
        script.requests[-2]["messages"]
    )  # the brain reads the reply without the steps


def test_a_persona_is_a_model_with_its_own_prompt_and_tools(client, script):
    script.add(reply("这是一张图片。"))
    client.chat.completions.create(model="kantu", messages=[{"role": "user", "content": "看看"}])
    request = script.requests[0]
    assert "看图" in request["messages"][0]["content"]
    assert {t["function"]["name"] for t in request["tools"]} == {
        "image_captioning"
    }  # kantu's, of those loaded
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert "does not exist" in str(error.value) and "kantu" in str(error.value)


def test_a_wrong_key_an_oversized_body_and_bad_messages_are_openai_errors(api, client):
    wrong = openai.OpenAI(base_url=api, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    big = "data:image/png;base64," + "A" * (3 * 2**20)
    with pytest.raises(openai.APIStatusError) as error:
        client.chat.completions.create(model="visual-orchestrator", messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": big}}]}])  # fmt: skip
    assert error.value.status_code == 413 and "over 2 MB" in str(error.value)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="visual-orchestrator", messages=[{"role": "assistant", "content": "x"}]
        )
    assert "last message must be the user's" in str(error.value)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="visual-orchestrator", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data"}}]}])  # fmt: skip
    assert "--allow-image-urls" in str(error.value)


def test_a_client_that_goes_away_mid_stream_stops_its_turn_and_the_next_one_runs(api, client, script):
    gate = threading.Event()
    script.add(Stream(["word "] * 30, gate=gate, gate_after=2))
    with httpx.stream("POST", f"{api}/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json={
            "model": "visual-orchestrator", "stream": True,
            "messages": [{"role": "user", "content": "talk"}]}, timeout=30) as response:  # fmt: skip
        lines = response.iter_lines()
        assert any("word" in line for line in lines)
        # one turn in flight for this key: a second one now is refused
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(
                model="visual-orchestrator", messages=[{"role": "user", "content": "hi"}]
            )
    gate.set()  # the client closed the connection; the brain's stream is closed at its next word
    for _ in range(100):
        if script.disconnects:
            break
        time.sleep(0.05)
    assert script.disconnects == 1
    script.add(reply("Still here."))
    for _ in range(50):  # the stopped turn leaves the in-flight count as soon as it ends
        try:
            answer = client.chat.completions.create(model="visual-orchestrator",
                                                    messages=[{"role": "user", "content": "hi"}])  # fmt: skip
            break
        except openai.RateLimitError:
            time.sleep(0.1)
    assert answer.choices[0].message.content == "Still here."


def test_serving_beyond_this_machine_needs_a_key(capsys):
    from orchestrator.cli import main

    assert main(["serve", "--load", "Image2Canny_cpu", "--weights", "tiny", "--host", "0.0.0.0"]) == 2
    assert "without --api-key" in capsys.readouterr().err


def test_eight_clients_at_once_each_get_their_own_images(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks.api_load import IMAGE_URL as LINK
    from benchmarks.api_load import data_url, edges_at, picture

    orch = Orchestrator("Image2Canny_cpu", weights="tiny", brain="rules", session_root=tmp_path)
    with served_api(orch, max_turns_in_flight=8) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)

        def turn(index: int) -> bytes:
            answer = client.chat.completions.create(model="visual-orchestrator", messages=[{"role": "user", "content": [
                {"type": "text", "text": "/image2canny"},
                {"type": "image_url", "image_url": {"url": data_url(picture(index))}}]}])  # fmt: skip
            [found] = LINK.findall(answer.choices[0].message.content)
            return httpx.get(found).content

        with ThreadPoolExecutor(8) as pool:
            pngs = list(pool.map(turn, range(8)))
    assert all(edges_at(png, i) for i, png in enumerate(pngs))
    assert not any(
        edges_at(pngs[i], (i + 1) % 8) for i in range(8)
    )  # the check tells one client from another


def test_image_urls_are_fetched_only_when_allowed_and_never_from_private_addresses(tmp_path):
    from web_site import WebSite

    from orchestrator.settings import Settings

    with WebSite() as site:
        for allow, expected in [((), "loopback"), (("127.0.0.1",), None)]:
            settings = Settings.from_env(weights="tiny", session_root=tmp_path, web_allow=allow)
            orch = Orchestrator("Image2Canny_cpu", settings=settings, brain="rules")
            with served_api(orch, allow_image_urls=True) as url:
                client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
                messages = [{"role": "user", "content": [{"type": "text", "text": "/image2canny"},
                            {"type": "image_url", "image_url": {"url": site.url("/pic.png")}}]}]  # fmt: skip
                if expected:
                    with pytest.raises(openai.BadRequestError, match=expected):
                        client.chat.completions.create(model="visual-orchestrator", messages=messages)
                    continue
                answer = client.chat.completions.create(model="visual-orchestrator", messages=messages)
                assert len(IMAGE_URL.findall(answer.choices[0].message.content)) == 1  # the edge map
                redirect = site.url("/to?url=http://169.254.169.254/latest/x.png")  # checked again after it
                messages[0]["content"][1]["image_url"]["url"] = redirect
                with pytest.raises(openai.BadRequestError, match="link-local"):
                    client.chat.completions.create(model="visual-orchestrator", messages=messages)


def test_one_process_serves_the_chat_app_the_api_and_mcp(tmp_path):
    """``gradio_app.py --api``: the app at /, the API at /v1, the MCP server at /mcp, one port, one key."""
    import anyio
    import uvicorn
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    from served_app import free_port

    from orchestrator.api import ApiOptions, create_app
    from orchestrator.ui import build_app, mount

    orch = Orchestrator("Image2Canny_cpu", weights="tiny", brain="rules", session_root=tmp_path)
    app = mount(build_app(orch), orch, create_app(orch, ApiOptions(api_key=KEY)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        assert "<gradio-app" in httpx.get(base + "/").text or "gradio" in httpx.get(base + "/").text.lower()
        models = openai.OpenAI(base_url=base + "/v1", api_key=KEY).models.list()
        assert models.data[0].id == "visual-orchestrator"
        assert httpx.post(base + "/mcp", json={}).status_code == 401  # the same key guards the MCP server

        async def tools() -> list[str]:
            client = create_mcp_http_client(headers={"Authorization": f"Bearer {KEY}"})
            async with streamable_http_client(base + "/mcp", http_client=client) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return [t.name for t in (await session.list_tools()).tools]

        assert anyio.run(tools) == ["image2canny"]
    finally:
        server.should_exit = True
        thread.join(10)
