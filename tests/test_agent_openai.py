"""The turn loop with the openai brain, against a scripted OpenAI-compatible server over real HTTP.

The real openai client and LangChain talk to tests/scripted_llm.py on 127.0.0.1; the tools are the
real ones on tiny weights. What is checked is what a user would notice: the tools that ran, the images,
the reply, and that a broken model, server or argument never breaks the session.
"""

from __future__ import annotations

import re
import socket
import time

import pytest
from PIL import Image
from scripted_llm import Response, ScriptedLLM, last_tool_output, reply, tool_call, tool_calls

from orchestrator import Orchestrator
from orchestrator.events import Notice, ReplyDelta, ToolFinished, ToolProgress, ToolStarted, TurnFinished

LOAD = "ImageCaptioning_cpu,Text2Image_cpu,Image2Canny_cpu,CannyText2Image_cpu"


def newest(request: dict) -> str:
    """The newest image, as the system prompt of this request states it."""
    system = request["messages"][0]["content"]
    return re.search(r"(?:Newest image|最新图片)[:：] ?(image/[0-9a-f]{8}\.png)", system).group(1)


def user_text(request: dict) -> str:
    return next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")


@pytest.fixture(scope="module")
def server():
    with ScriptedLLM() as llm:
        yield llm


@pytest.fixture
def llm(server):
    server.script.clear()
    server.requests.clear()
    return server


@pytest.fixture(scope="module")
def make(server, tmp_path_factory):
    def make(load: str = LOAD, url: str | None = None, **options) -> Orchestrator:
        options = {"base_url": url or server.url, "api_key": "test-key", "max_retries": 1, **options}
        root = tmp_path_factory.mktemp("sessions")
        return Orchestrator(load, weights="tiny", session_root=root, brain="openai", brain_options=options)

    return make


@pytest.fixture(scope="module")
def orch(make):
    return make()


def test_one_tool_call_streams_each_step(llm, orch):
    llm.add(tool_call("text2image", prompt="a red car", seed=1), lambda r: reply(f"Here it is: {newest(r)}"))
    session = orch.new_session()
    events = list(session.stream("draw a red car"))
    kinds = [type(e).__name__ for e in events]
    after_tool = kinds[kinds.index("ToolFinished") + 1 :]
    assert kinds[0] == "ToolStarted" and after_tool[-1] == "TurnFinished"
    assert set(after_tool[:-1]) == {"ReplyDelta"} and len(after_tool) > 3  # the reply came in pieces
    progress = [e.message for e in events if isinstance(e, ToolProgress)]
    assert progress[0] == "loading Text2Image on cpu" and "step 2/2" in progress
    result = events[-1].result
    [call] = result.tool_calls
    assert (call.tool, call.args["prompt"], call.args["seed"], call.error) == (
        "text2image",
        "a red car",
        1,
        None,
    )
    assert result.images == call.images and (session.folder / call.images[0]).is_file()
    assert result.reply == f"Here it is: {call.images[0]}"
    assert "".join(e.text for e in events if isinstance(e, ReplyDelta)) == result.reply
    first, second = llm.requests
    assert {t["function"]["name"] for t in first["tools"]} == set(orch.tools)
    spec = next(t["function"] for t in first["tools"] if t["function"]["name"] == "text2image")
    assert spec["parameters"] == orch.tools["text2image"].schema()  # schemas written once, in the tool
    assert second["messages"][-1]["role"] == "tool" and call.images[0] in second["messages"][-1]["content"]


def test_upload_then_a_three_step_chain(llm, orch):
    llm.add(
        lambda r: tool_call("image2canny", image=newest(r)),
        lambda r: tool_call("canny2image", image=newest(r), prompt="a cat made of glass"),
        lambda r: tool_call("image_captioning", image=newest(r)),
        lambda r: reply(f"I drew {newest(r)} from the edges."),
    )
    session = orch.new_session()
    result = session.chat("turn the edges of this photo into a glass cat and describe it",
                          images=[Image.new("RGB", (96, 64), "orange")])  # fmt: skip
    upload = result.images[0]
    caption, canny, control, describe = result.tool_calls  # the upload is captioned before the brain is asked
    assert [c.tool for c in result.tool_calls] == [
        "image_captioning",
        "image2canny",
        "canny2image",
        "image_captioning",
    ]
    assert all(c.error is None for c in result.tool_calls)
    assert caption.args["image"] == upload == canny.args["image"]
    assert control.args["image"] == canny.images[0] and describe.args["image"] == control.images[0]
    assert session.images.lineage(control.images[0]).parents == (canny.images[0],)
    assert result.images == [upload, canny.images[0], control.images[0]]
    assert result.reply == f"I drew {control.images[0]} from the edges."
    announcement = user_text(llm.requests[0])
    assert upload in announcement and caption.output in announcement


def test_parallel_tool_calls_in_one_response(llm, orch):
    llm.add(tool_calls(("text2image", {"prompt": "a cat", "seed": 1}), ("text2image", {"prompt": "a dog", "seed": 2})),
            reply("Two pictures."))  # fmt: skip
    events = list(orch.new_session().stream("draw a cat and a dog"))
    started = [e for e in events if isinstance(e, ToolStarted)]
    assert [e.args["prompt"] for e in started] == ["a cat", "a dog"]
    result = events[-1].result
    assert len(result.images) == 2 and result.reply == "Two pictures."
    sent = llm.requests[1]["messages"]
    asked = [c["id"] for c in sent[-3]["tool_calls"]]
    assert [m["tool_call_id"] for m in sent[-2:]] == asked == [e.call_id for e in started]


def test_malformed_arguments_are_an_observation_and_python_dicts_are_repaired(llm, orch):
    llm.add(tool_calls(("text2image", '{"prompt": "a cat",')), lambda r: reply(last_tool_output(r)))
    session = orch.new_session()
    result = session.chat("draw a cat")
    [call] = result.tool_calls
    assert "not a valid JSON object" in call.error and result.images == []
    assert result.reply.startswith("Error: The arguments for text2image are not a valid JSON object")
    llm.add(tool_calls(("text2image", "{'prompt': 'a cat', 'seed': 4}")), reply("ok"))
    result = session.chat("try again")
    assert result.tool_calls[0].error is None and result.tool_calls[0].args["seed"] == 4 and result.images


def test_unknown_tool_lists_the_real_ones(llm, orch):
    llm.add(tool_call("paint_mona_lisa", style="oil"), lambda r: reply(last_tool_output(r)))
    result = orch.new_session().chat("paint the Mona Lisa")
    assert result.tool_calls[0].error.startswith("There is no tool named 'paint_mona_lisa'")
    assert "text2image" in result.reply and "canny2image" in result.reply


def test_an_invented_image_name_is_refused_and_the_model_can_correct_itself(llm, orch):
    llm.add(
        tool_call("image2canny", image="image/deadbeef.png"),
        lambda r: tool_call("image2canny", image=newest(r)),
        reply("Edges done."),
    )
    session = orch.new_session()
    upload = session.upload(Image.new("RGB", (64, 64), "white"))
    result = session.chat("edges please")
    invented, fixed = result.tool_calls
    assert "no image named 'image/deadbeef.png'" in invented.error and upload in invented.error
    assert fixed.error is None and fixed.args["image"] == upload and result.reply == "Edges done."
    assert not (session.folder / "image/deadbeef.png").exists()


def test_a_refused_upload_is_explained_and_the_turn_goes_on(llm, orch):
    llm.add(reply("I could not see an image."))
    result = orch.new_session().chat("what is this?", images=[b"not an image at all"])
    assert result.reply.startswith("The upload was refused: The upload is not an image")
    assert result.reply.endswith("I could not see an image.") and result.error
    assert "The upload was refused" in user_text(llm.requests[0])


def test_tool_calls_left_in_the_text_are_run(llm, orch):
    llm.add(
        reply('<tool_call>\n{"name": "text2image", "arguments": {"prompt": "a cat"}}\n</tool_call>'),
        reply("ok"),
    )
    result = orch.new_session().chat("draw a cat")
    assert result.tool_calls[0].tool == "text2image" and result.images


def test_a_chinese_conversation_is_answered_in_chinese(llm, orch):
    llm.add(tool_call("text2image", prompt="a cat wearing a hat"), lambda r: reply(f"画好了：{newest(r)}"))
    session = orch.new_session()
    result = session.chat("画一只戴帽子的猫")
    system = llm.requests[0]["messages"][0]["content"]
    assert (
        "请用中文回答" in system and "必须用英文书写" in system
    )  # reply in Chinese, prompts to tools in English
    assert result.tool_calls[0].args["prompt"] == "a cat wearing a hat"
    assert result.reply == f"画好了：{result.images[0]}"
    llm.add(reply("It is a cat in a hat."))
    session.chat("what did you draw?")
    assert "Answer in English" in llm.requests[-1]["messages"][0]["content"]  # detected per turn
    assert "画一只戴帽子的猫" in [m["content"] for m in llm.requests[-1]["messages"]]  # the history is kept


def test_429_with_retry_after_is_retried(llm, orch):
    llm.add(Response(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"}), reply("hello"))
    started = time.monotonic()
    result = orch.new_session().chat("hi")
    assert result.reply == "hello" and result.error is None
    assert len(llm.requests) == 2 and time.monotonic() - started >= 1.0


def test_http_500_ends_the_turn_with_a_clear_reply(llm, orch):
    llm.add(*[Response(500, {"error": {"message": "the GPU caught fire"}})] * 2)
    session = orch.new_session()
    result = session.chat("hi")
    assert "answered with HTTP 500 (the GPU caught fire)" in result.reply and result.error == result.reply
    assert session.history == []  # a turn nobody answered is not history
    llm.add(reply("back"))
    assert session.chat("hi again").reply == "back"  # the session goes on


def test_server_down_is_one_clear_sentence_in_the_users_language(make):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    session = make("Text2Image_cpu", url=url, max_retries=0).new_session()
    result = session.chat("draw a cat")
    assert result.reply.startswith(f"The language model server at {url} cannot be reached")
    assert "--brain rules" in result.reply and result.tool_calls == []
    assert session.chat("画一只猫").reply.startswith(f"无法连接语言模型服务器 {url}")


def test_a_slow_server_times_out(llm, make):
    llm.add(Response(200, reply("too late"), delay=3))
    started = time.monotonic()
    result = make("Text2Image_cpu", request_timeout=1, max_retries=0).new_session().chat("hi")
    assert "did not answer within 1 seconds" in result.reply and time.monotonic() - started < 2.5


def test_step_limit_ends_a_turn_that_never_answers(llm, make):
    llm.add(*[lambda r: tool_call("image2canny", image=newest(r))] * 3)
    session = make("Image2Canny_cpu", max_steps=2).new_session()
    session.upload(Image.new("RGB", (64, 64), "white"))
    result = session.chat("edges of edges of edges, forever")
    assert len(result.tool_calls) == 2 and len(llm.requests) == 2
    assert result.reply.startswith("I stopped after 2 steps") and result.images[-1] in result.reply


def test_a_model_without_tool_support_falls_back_to_react(llm, make):
    llm.add(
        Response(400, {"error": {"message": "registry.ollama.ai/library/gemma:2b does not support tools"}}),
        lambda r: reply(
            f"Thought: I need the edges\nAction: image2canny\nAction Input: {{'image': '{newest(r)}'}}"
        ),
        lambda r: reply(f"Thought: done\nFinal Answer: Here is {newest(r)}"),
    )
    session = make("Image2Canny_cpu").new_session()
    upload = session.upload(Image.new("RGB", (64, 64), "white"))
    events = list(session.stream("show me the edges"))
    result = events[-1].result
    assert result.tool_calls[0].args == {"image": upload} and result.tool_calls[0].error is None
    assert result.reply == f"Here is {result.images[0]}"
    react = llm.requests[1]
    assert "tools" not in react and "Action Input" in react["messages"][0]["content"] and react["stop"]
    observation = user_text(llm.requests[2])
    assert observation.startswith("Observation: ") and result.images[0] in observation
    assert isinstance(events[-1], TurnFinished) and not any(isinstance(e, Notice) for e in events)


def test_history_is_trimmed_to_the_token_budget(llm, make):
    session = make("Text2Image_cpu", history_tokens=40).new_session()
    for text in ("zebra " * 30, "second", "third"):
        llm.add(reply("ok"))
        session.chat(text)
    contents = [m["content"] for m in llm.requests[-1]["messages"]]
    assert "second" in contents and "third" in contents and not any("zebra" in str(c) for c in contents)


def test_events_of_a_turn_are_what_the_ui_renders(llm, orch):
    llm.add(reply("Just words."))
    events = list(orch.new_session().stream("hello"))
    assert {type(e) for e in events[:-1]} == {ReplyDelta} and isinstance(events[-1], TurnFinished)
    assert "".join(e.text for e in events[:-1]) == "Just words." == events[-1].result.reply
    assert not [e for e in events if isinstance(e, ToolFinished)]
