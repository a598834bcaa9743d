"""The app from the outside: the /chat endpoint through gradio_client, and `python gradio_app.py` itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from served_app import free_port, served

pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """Every card on the CPU: the app must serve at once, loading only what a turn uses."""
    from orchestrator import Orchestrator
    from orchestrator.cards import load_cards

    started = time.perf_counter()
    every_card = ",".join(f"{name}_cpu" for name in load_cards().names())
    orchestrator = Orchestrator(
        every_card, weights="tiny", brain="rules", session_root=tmp_path_factory.mktemp("s")
    )
    with served(orchestrator) as url:
        yield url, orchestrator, time.perf_counter() - started


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_the_app_serves_within_seconds_and_loads_nothing_until_asked(app):
    url, orchestrator, serving = app
    assert serving < 30, f"took {serving:.1f} s to serve"
    assert len(orchestrator.manager.status()) >= 27
    assert {status.state for status in orchestrator.manager.status()} == {"not loaded"}
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200


def test_chat_endpoint_from_gradio_client_keeps_a_session_per_client(app, photo):
    from gradio_client import Client, handle_file

    url, orchestrator, _ = app
    client = Client(url, verbose=False)
    assert set(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == {
        "/chat",
        "/clear",
    }

    message = {"text": "show me the edges of this image", "files": [handle_file(str(photo))]}
    reply, images, calls = client.predict(message, "en", api_name="/chat")
    assert [call["tool"] for call in calls] == ["image2canny"] and calls[0]["error"] is None
    edges = calls[0]["images"][0]
    assert edges in reply and len(images) == 1
    assert Image.open(images[0]).size == (64, 64)  # tiny weights: images are 64 px

    _, _, calls = client.predict(
        {"text": "show me the edges of the last image", "files": []}, "en", api_name="/chat"
    )
    assert calls[0]["args"]["image"] == edges  # the same client, the same session

    other = Client(url, verbose=False)
    reply, images, calls = other.predict(
        {"text": f"/image2canny image={edges}", "files": []}, "en", api_name="/chat"
    )
    assert images == [] and f"no image named '{edges}'" in calls[0]["error"]

    client.predict(api_name="/clear")
    _, _, calls = client.predict({"text": f"/image2canny image={edges}", "files": []}, "en", api_name="/chat")
    assert "no image named" in calls[0]["error"]
    assert next(s for s in orchestrator.manager.status() if s.card == "Image2Canny").state == "resident"


def test_gradio_app_py_serves_on_localhost_and_refuses_a_bad_load_in_one_sentence(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = subprocess.run([sys.executable, "gradio_app.py", "--load", "Image2Cany_cpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "Did you mean Image2Canny?" in bad.stderr, bad.stderr

    port = free_port()
    command = [sys.executable, "gradio_app.py", "--load", "Image2Canny_cpu,Text2Image_cpu", "--weights", "tiny",
               "--brain", "rules", "--port", str(port), "--session-dir", str(tmp_path)]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"gradio_app.py did not serve: {process.poll()=}")
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}" in output
