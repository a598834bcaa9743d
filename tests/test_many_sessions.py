"""Many users at once: 20 sessions chatting concurrently through the Python API and the Gradio HTTP API,
with tiny weights and a scripted LLM server. No errors, no leak between sessions, each model loaded once."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image
from scripted_llm import ScriptedLLM, last_tool_output, reply, tool_call
from served_app import served

from orchestrator.engine import Orchestrator

SESSIONS = 20
NAME = re.compile(r"image/[0-9a-f]{8}\.png")


def answer(request: dict) -> dict:
    """A stateless brain: canny on the image the user's turn names, then a reply naming the result."""
    last = request["messages"][-1]
    if last["role"] == "tool":
        return reply(f"Done: {last_tool_output(request)}")
    names = NAME.findall(str(last.get("content")))
    return tool_call("image2canny", image=names[-1]) if names else reply("Please upload an image.")


@pytest.fixture(scope="module")
def llm():
    with ScriptedLLM([answer] * (SESSIONS * 8)) as server:
        yield server


@pytest.fixture(scope="module")
def orch(llm, tmp_path_factory):
    return Orchestrator("Image2Canny_cpu,ImageCaptioning_cpu", weights="tiny", brain="openai",
                        brain_options={"base_url": llm.url, "api_key": "test"},
                        session_root=tmp_path_factory.mktemp("sessions"))  # fmt: skip


def photo(i: int) -> Image.Image:
    image = Image.new("RGB", (96, 64), (i * 10 % 255, 40, 90))
    image.paste((255, 255, 255), (10 + i, 10, 50 + i, 40))
    return image


def test_twenty_sessions_chat_at_once_through_the_python_api(orch):
    sessions = [orch.new_session() for _ in range(SESSIONS)]
    barrier = threading.Barrier(SESSIONS)

    def chat(i: int):
        barrier.wait()
        return sessions[i].chat("show me the edges of this picture", images=[photo(i)])

    with ThreadPoolExecutor(SESSIONS) as pool:
        results = list(pool.map(chat, range(SESSIONS)))

    for i, result in enumerate(results):
        calls = result.tool_calls  # the upload's caption (for the brain), then the brain's canny call
        assert [c.tool for c in calls] == ["image_captioning", "image2canny"], calls
        assert all(c.error is None for c in calls), calls
        edges = calls[1].images[0]
        assert edges in result.reply and edges in sessions[i].images
        others = [s for j, s in enumerate(sessions) if j != i]
        assert all(edges not in s.images for s in others), "an image leaked into another session"
        # a session can never resolve another's image names, even when the model asks for them
        leak = others[0].call_tool("image2canny", {"image": edges})
        assert leak.error and "no image named" in leak.error
    folders = {s.folder for s in sessions}
    assert len(folders) == SESSIONS
    loads = {s.card: s.loads for s in orch.manager.status()}
    assert loads["Image2Canny"] == 1, "the model must load once for all sessions"
    assert loads["ImageCaptioning"] == 1  # uploads are captioned for the brain: also loaded once


def test_twenty_clients_at_once_through_the_gradio_http_api(orch, tmp_path):
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file

    with served(orch) as url:
        paths = []
        for i in range(SESSIONS):
            path = tmp_path / f"photo{i}.png"
            photo(i).save(path)
            paths.append(path)
        clients = [Client(url, verbose=False) for _ in range(SESSIONS)]

        def chat(i: int):
            message = {"text": "show me the edges", "files": [handle_file(str(paths[i]))]}
            return clients[i].predict(message, "en", api_name="/chat")

        with ThreadPoolExecutor(SESSIONS) as pool:
            results = list(pool.map(chat, range(SESSIONS)))
    made = []
    for _text, images, calls in results:
        assert [c["tool"] for c in calls] == ["image_captioning", "image2canny"], calls
        assert all(c["error"] is None for c in calls), calls
        made.append(calls[1]["images"][0])
        assert len(images) == 1  # the edges (the endpoint returns what the tools made)
    assert len(set(made)) == SESSIONS
    assert {s.card: s.loads for s in orch.manager.status()}["Image2Canny"] == 1
