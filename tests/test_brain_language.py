"""Issue 19 item 5: the reply's language follows each user turn, also when tool results and captions are English.

A multi-turn Chinese conversation with a tool chain goes through the real openai client to the scripted server;
what is checked is what each request tells the model: the system prompt and, right after each (English) tool
result, a reminder in the turn's language. The rules brain answers in the turn's language without a model.
"""

from __future__ import annotations

import re

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from PIL import Image
from scripted_llm import ScriptedLLM, reply, tool_call

from orchestrator import Orchestrator
from orchestrator.brain.history import remind_language

LOAD = "ImageCaptioning_cpu,Image2Canny_cpu,CannyText2Image_cpu"
ZH_SYSTEM, EN_SYSTEM = (
    "用户最新的消息是中文，请用中文回答。",
    "Answer in English, the language of the user's latest message.",
)
ZH_REMINDER, EN_REMINDER = (
    "（请用中文回答用户，即用户最新消息的语言。）",
    "(Answer the user in English, the language of their latest message.)",
)


def newest(request: dict) -> str:
    system = request["messages"][0]["content"]
    return re.search(r"(?:Newest image|最新图片)[:：] ?(image/[0-9a-f]{8}\.png)", system).group(1)


def tool_contents(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


@pytest.fixture(scope="module")
def orchestrators(tmp_path_factory):
    with ScriptedLLM() as llm:
        root = tmp_path_factory.mktemp("sessions")
        options = {"base_url": llm.url, "api_key": "test-key", "max_retries": 0}
        llm_orch = Orchestrator(
            LOAD, weights="tiny", session_root=root, brain="openai", brain_options=options
        )
        rules = Orchestrator(LOAD, weights="tiny", session_root=root, brain="rules")
        yield llm, llm_orch, rules


def test_a_chinese_tool_chain_is_answered_in_chinese_until_the_user_switches(orchestrators):
    llm, orch, _ = orchestrators
    llm.add(
        lambda r: tool_call("image2canny", image=newest(r)),
        lambda r: tool_call("canny2image", image=newest(r), prompt="a cat made of light"),
        lambda r: reply(f"画好了：{newest(r)}"),
        lambda r: tool_call("image_captioning", image=newest(r)),
        reply("这是一只发光的猫。"),
        lambda r: tool_call("image_captioning", image=newest(r)),
        reply("It is a glowing cat."),
    )
    session = orch.new_session()
    first = session.chat(
        "先提取这张照片的边缘，再根据边缘画一只发光的猫", images=[Image.new("RGB", (64, 64), "gray")]
    )
    second = session.chat("这只猫是什么样子的？")
    third = session.chat("Thanks! Now describe it in English, please.")
    assert [c.tool for c in first.tool_calls] == [
        "image_captioning",
        "image2canny",
        "canny2image",
    ]  # upload caption
    assert first.reply.startswith("画好了：") and second.reply == "这是一只发光的猫。"
    assert third.reply == "It is a glowing cat."

    languages = ["zh"] * 5 + ["en"] * 2  # one per request: turn 1 made three, turns 2 and 3 two each
    assert len(llm.requests) == len(languages)
    for request, language in zip(llm.requests, languages, strict=True):
        system = request["messages"][0]["content"]
        assert (ZH_SYSTEM in system) is (language == "zh") and (EN_SYSTEM in system) is (language == "en")
        last = request["messages"][-1]
        if last["role"] == "tool":  # an English tool result: the turn's language is restated right after it
            assert re.search(r"[A-Za-z]{4}", last["content"].split("\n\n")[0])
            assert last["content"].endswith(ZH_REMINDER if language == "zh" else EN_REMINDER)
        for earlier in tool_contents(request)[:-1]:  # the history itself is not changed
            assert ZH_REMINDER not in earlier and EN_REMINDER not in earlier
    upload = next(m["content"] for m in llm.requests[0]["messages"] if m["role"] == "user")
    assert "图像描述工具的结果" in upload  # the caption is English, the announcement is the turn's language
    assert [m["role"] for m in llm.requests[1]["messages"]][-2:] == ["assistant", "tool"]


def test_the_rules_brain_answers_each_turn_in_its_language(orchestrators):
    _, _, rules = orchestrators
    session = rules.new_session()
    edges = session.chat("提取边缘", images=[Image.new("RGB", (64, 64), "white")])
    assert edges.tool_calls[0].tool == "image2canny" and edges.reply.startswith("已运行 image2canny：")
    drawn = session.chat("根据边缘生成一只猫")
    assert (
        drawn.tool_calls[0].tool == "canny2image"
        and drawn.tool_calls[0].args["image"] == edges.tool_calls[0].images[0]
    )
    assert drawn.reply.startswith("已运行 canny2image：")
    described = session.chat("describe the picture")
    assert described.tool_calls[0].tool == "image_captioning" and described.reply.startswith(
        "image_captioning: "
    )
    assert session.chat("描述一下这张图片").reply.startswith("已运行 image_captioning：")


def test_the_reminder_follows_only_a_tool_result_and_leaves_the_history_alone():
    question = [HumanMessage("画一只猫")]
    assert remind_language(question, "zh") is question
    result = ToolMessage("Generated image/1a2b3c4d.png", tool_call_id="c1", name="text2image")
    reminded = remind_language([*question, result], "zh")
    assert reminded[-1].content == f"Generated image/1a2b3c4d.png\n\n{ZH_REMINDER}"
    assert result.content == "Generated image/1a2b3c4d.png" and reminded[-1].tool_call_id == "c1"
