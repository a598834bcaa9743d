"""``python -m orchestrator run``: the --json shape, the transcript, and the exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from scripted_llm import ScriptedLLM, Stream, reply, tool_call

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--load", "Image2Canny_cpu", "--weights", "tiny"]


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (100, 80), "orange").save(path)
    return path


@pytest.fixture(autouse=True)
def no_llm(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["run", *argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_json_has_one_object_with_every_turn(capsys, photo, tmp_path):
    folder = tmp_path / "session"
    code, data = run_json(capsys, *TINY, "--brain", "rules", "--image", str(photo), "--session-dir", str(folder),
                          "show the edges", "/image2canny")  # fmt: skip
    assert (
        code == 0 and set(data) == {"turns", "session_dir"} and data["session_dir"] == str(folder.resolve())
    )
    first, second = data["turns"]
    assert set(first) == {"user", "reply", "images", "tool_calls"} and first["user"] == "show the edges"
    upload, edges = first["images"]
    [call] = first["tool_calls"]
    assert set(call) == {"tool", "args", "output", "images", "error", "seconds"}
    assert call["tool"] == "image2canny" and call["error"] is None and call["images"] == [edges]
    assert call["args"] == {"image": Path(upload).relative_to(folder.resolve()).as_posix()}
    assert all(Path(p).is_file() and Path(p).is_relative_to(folder.resolve()) for p in (upload, edges))
    assert Path(edges).name in first["reply"] and second["tool_calls"][0]["args"]["image"].endswith(
        Path(edges).name
    )


def test_transcript_without_json(capsys, photo):
    assert main(["run", *TINY, "--brain", "rules", "--image", str(photo), "extract the edges"]) == 0
    out = capsys.readouterr().out
    assert 'you: extract the edges\n  -> image2canny {"image": "image/' in out
    assert "  <- image2canny (" in out and "assistant: image2canny: " in out and "  image: /" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--load", "ImageCaptionin_cpu", "hi"], "ImageCaptionin"),
        (["--load", "Image2Canny_cuda:7", "hi"], "cuda:7"),
        (["--brain", "llama", "hi"], "Unknown brain 'llama'"),
        (["--brain", "rules", "--quant", "int8", "hi"], "--quant int8 applies only to a local model"),
        (["--image", "/no/such/photo.png", "hi"], "--image /no/such/photo.png: there is no such file."),
        (["--weights", "tiny"], "MESSAGE"),  # no message at all
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    assert main(["run", *TINY[:2], *argv]) == 2
    err = capsys.readouterr().err
    assert message in err


def test_an_llm_server_over_http_and_a_dead_one(capsys, monkeypatch, photo):
    with ScriptedLLM([tool_call("image2canny", image="latest"), reply("Edges are ready.")]) as llm:
        monkeypatch.setenv("OPENAI_BASE_URL", llm.url)
        code, data = run_json(
            capsys, *TINY, "--model", "my-local-model", "--image", str(photo), "edges please"
        )
        assert code == 0 and llm.requests[0]["model"] == "my-local-model"
    [turn] = data["turns"]
    assert turn["reply"] == "Edges are ready." and turn["tool_calls"][0]["error"].startswith(
        "image2canny: argument"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{sock.getsockname()[1]}/v1")
    code, data = run_json(capsys, *TINY, "hi")
    assert code == 1 and "cannot be reached" in data["turns"][0]["reply"]


def test_the_transcript_writes_the_reply_as_it_streams(capsys, tmp_path):
    from orchestrator.cli.run import Transcript
    from orchestrator.events import ReplyDelta, ToolStarted, TurnFinished, TurnResult

    transcript = Transcript(tmp_path)
    transcript.show(ReplyDelta("Let me "))
    assert capsys.readouterr().out == "assistant: Let me "  # on screen at once, the line still open
    transcript.show(ReplyDelta("look."))
    transcript.show(ToolStarted("c1", "image2canny", {"image": "image/0a1b2c3d.png"}))
    transcript.show(ReplyDelta("Done"))
    transcript.show(ReplyDelta(" and dusted."))
    transcript.show(ReplyDelta("The server broke off.", replace=True))
    transcript.show(TurnFinished(TurnResult("x", "The server broke off.")))
    assert capsys.readouterr().out == (
        'look.\n  -> image2canny {"image": "image/0a1b2c3d.png"}\nassistant: Done and dusted.\n'
        "assistant: The server broke off.\n\n"
    )


def test_a_streamed_reply_is_one_assistant_line(capsys, monkeypatch):
    with ScriptedLLM([Stream(["Edges ", "are ", "ready."])]) as llm:
        monkeypatch.setenv("OPENAI_BASE_URL", llm.url)
        assert main(["run", *TINY, "hello"]) == 0
    assert "assistant: Edges are ready.\n" in capsys.readouterr().out


def test_python_dash_m_entry_point(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_API_KEY", None), env.pop("OPENAI_BASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "orchestrator", "run", *TINY, "--session-dir", str(tmp_path),
                           "--json", "你好"], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [turn] = json.loads(done.stdout)["turns"]
    assert "规则大脑" in turn["reply"] and "未配置语言模型" in done.stderr  # the fallback notice, on stderr
