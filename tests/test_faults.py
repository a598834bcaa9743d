"""Faults and hostile model output: each ends in a clear reply, the session goes on, nothing made is lost,
no file lands outside the session folder, and no secret reaches the logs."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from scripted_llm import Response, ScriptedLLM, completion, reply, tool_call, tool_calls
from served_app import served

from orchestrator.engine import Orchestrator

SECRET = "sk-test-0123456789abcdefSECRETSECRET"
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def llm():
    with ScriptedLLM() as server:
        yield server


@pytest.fixture(scope="module")
def orch(llm, tmp_path_factory):
    return Orchestrator("Image2Canny_cpu", weights="tiny", brain="openai",
                        brain_options={"base_url": llm.url, "api_key": SECRET, "max_retries": 1,
                                       "request_timeout": 3.0},
                        session_root=tmp_path_factory.mktemp("sessions"))  # fmt: skip


def script(llm: ScriptedLLM, *items) -> None:
    llm.script[:] = list(items)


def files_of(session) -> set:
    return {p for p in session.folder.parent.rglob("*") if p.is_file()}


def test_server_dies_mid_turn_and_what_was_made_is_kept(llm, orch):
    session = orch.new_session()
    photo = session.upload(Image.new("RGB", (128, 64), (200, 10, 10)))
    script(llm, tool_call("image2canny", image=photo), *[Response(500, {"error": {"message": "boom"}})] * 4)
    result = session.chat("edges please")
    edges = result.tool_calls[0].images[0]
    assert result.error
    assert "500" in result.reply or "server" in result.reply.lower(), result.reply
    assert edges in session.images and (session.folder / edges).is_file()
    lineage = json.loads((session.folder / "lineage.json").read_text())
    assert [r["name"] for r in lineage] == [photo, edges] and lineage[1]["parents"] == [photo]
    script(llm, reply("I am back."))
    assert session.chat("hello?").reply == "I am back."


def test_429_mid_turn_is_retried_and_the_turn_completes(llm, orch):
    session = orch.new_session()
    photo = session.upload(Image.new("RGB", (64, 64)))
    script(llm, tool_call("image2canny", image=photo), Response(429, {"error": {"message": "slow down"}},
           {"Retry-After": "0"}), reply("Done."))  # fmt: skip
    result = session.chat("edges")
    assert result.reply == "Done." and result.tool_calls[0].error is None


def test_fifty_tool_calls_in_one_response_are_capped(llm, orch):
    session = orch.new_session()
    photo = session.upload(Image.new("RGB", (64, 64)))
    script(llm, tool_calls(*[("image2canny", {"image": photo})] * 50), reply("That was a lot."))
    result = session.chat("edges, fifty times")
    ran = [c for c in result.tool_calls if c.error is None]
    skipped = [c for c in result.tool_calls if c.error]
    assert len(ran) == 16 and len(skipped) == 34
    assert "at most 16 tool calls" in skipped[0].error
    assert result.reply == "That was a lot."
    assert len(session.images.names()) == 17


garbage = st.one_of(
    st.text(max_size=200).map(lambda t: Response(200, t)),  # not JSON at all
    st.text(max_size=100).map(lambda t: completion({"role": "assistant", "content": t})),
    st.sampled_from([
        Response(200, {"choices": []}),
        Response(200, {"id": "x"}),
        Response(200, {"choices": [{"index": 0, "message": None, "finish_reason": "stop"}]}),
        tool_calls(("image2canny", '{"image": "image/')),  # partial JSON arguments
        tool_calls(("image2canny", "[1, 2, 3]")),
        tool_calls(("rm_rf", {"path": "/"})),
        tool_calls(("image2canny", {"image": "/etc/passwd"})),
        tool_calls(("image2canny", {"image": "../../../../etc/passwd"})),
        tool_calls(("image2canny", {"image": "https://example.com/x.png"})),
        tool_calls(("image2canny", {"image": "image/" + "9" * 4000})),
        tool_calls(("", {})),
        Response(200, "{\"choices\": [{\"message\": {\"role\": \"assistant\", \"tool_calls\": [{\"id\": 1}]}}]}"),
    ]),
)  # fmt: skip


@FAST
@given(bad=garbage)
def test_garbage_from_the_model_never_crashes_a_turn(llm, orch, bad):
    session = orch.new_session()
    before = files_of(session)
    script(llm, bad, reply("recovered"), reply("recovered"), reply("recovered"))
    result = session.chat("hi")
    assert isinstance(result.reply, str) and result.reply
    assert "Traceback" not in result.reply
    assert all(session.folder in p.parents for p in files_of(session) - before)
    script(llm, reply("still here"))
    assert session.chat("are you there?").reply == "still here"


def test_secrets_never_reach_the_logs_or_replies(llm, orch, caplog):
    session = orch.new_session()
    with caplog.at_level(logging.DEBUG):
        script(llm, Response(401, {"error": {"message": "Incorrect API key provided"}}))
        first = session.chat("hello")
        script(llm, Response(500, "oops"), Response(500, "oops"), Response(500, "oops"))
        second = session.chat("hello again")
    assert SECRET not in caplog.text
    assert SECRET not in first.reply + second.reply
    assert SECRET[-10:] not in caplog.text


def test_app_serves_only_session_images(orch, tmp_path):
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("top secret")
    with served(orch) as base:
        for path in ("/etc/passwd", str(secret_file), "../../../../etc/passwd", "/proc/self/environ"):
            for route in ("gradio_api/file=", "file=", "gradio_api/file/"):
                url = f"{base}{route}{path}"
                try:
                    with urllib.request.urlopen(url, timeout=10) as response:
                        body = response.read()
                except urllib.error.HTTPError as err:
                    assert err.code in (400, 403, 404, 405), (url, err.code)
                    continue
                assert b"root:" not in body and b"top secret" not in body and b"OPENAI" not in body, url
