"""Issue 20: personas (NextChat's masks) — shipped ones in two languages, the user's own, and each front end's
way of choosing one."""

from __future__ import annotations

import logging

import pytest
from scripted_llm import ScriptedLLM, reply, tool_call

from orchestrator import Orchestrator
from orchestrator.cli import main
from orchestrator.errors import SpecError
from orchestrator.personas import choose, load_personas


def test_shipped_personas_in_english_and_chinese_and_the_users_own_win(tmp_path, caplog):
    shipped = load_personas()
    assert {"artist", "huashi", "photo-editor", "kantu"} <= set(shipped)
    assert shipped["huashi"].language == "zh" and shipped["artist"].language == "en"
    assert shipped["kantu"].tools == ("image_captioning", "visual_question_answering")
    (tmp_path / "artist.yaml").write_text("name: artist\ntitle: My artist\nsystem: Paint in oils.\n")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    (tmp_path / "bad-name.yaml").write_text("name: Has Spaces\n")
    with caplog.at_level(logging.WARNING):
        mine = load_personas(tmp_path)
    assert mine["artist"].title == "My artist" and mine["artist"].tools == ()  # mine, every tool
    assert "kantu" in mine and "Has Spaces" not in mine
    assert "broken.yaml" in caplog.text and "bad-name.yaml" in caplog.text  # skipped, named
    with pytest.raises(SpecError, match="There is no persona 'nobody'; the personas are: .*kantu"):
        choose(mine, "nobody")


@pytest.fixture
def llm():
    with ScriptedLLM() as server:
        yield server


def test_a_persona_adds_its_prompt_limits_the_tools_and_refuses_others(llm, tmp_path):
    orch = Orchestrator("Image2Canny_cpu,ImageCaptioning_cpu", weights="tiny", brain="openai",
                        brain_options={"base_url": llm.url, "api_key": "k", "max_retries": 0},
                        session_root=tmp_path)  # fmt: skip
    session = orch.new_session()
    session.use_persona(load_personas()["kantu"])
    assert session.language == "zh"
    llm.add(tool_call("image2canny", image="image/00000000.png"), reply("好的。"))
    result = session.chat("看看这张图")
    first = llm.requests[0]
    assert "看图" in first["messages"][0]["content"]
    assert {t["function"]["name"] for t in first["tools"]} == {"image_captioning"}
    [call] = result.tool_calls
    assert "not among the tools of the persona 看图说话" in call.error  # the model is told, the turn goes on
    assert result.reply == "好的。"
    session.use_persona(None)
    llm.add(reply("ok"))
    session.chat("hello")
    assert {t["function"]["name"] for t in llm.requests[-1]["tools"]} == {"image_captioning", "image2canny"}


def test_the_cli_takes_a_persona_and_refuses_an_unknown_one(llm, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_BASE_URL", llm.url)
    llm.add(reply("Ready to draw."))
    assert main(["run", "--load", "Image2Canny_cpu", "--weights", "tiny", "--persona", "artist", "hi"]) == 0
    assert "illustrator" in llm.requests[0]["messages"][0]["content"]
    assert main(["run", "--load", "Image2Canny_cpu", "--weights", "tiny", "--persona", "nobody", "hi"]) == 2
    assert "There is no persona 'nobody'" in capsys.readouterr().err
