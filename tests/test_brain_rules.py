"""The rules brain (no LLM): its routing table in English and Chinese, slash commands, and a real session."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, ToolMessage

from orchestrator import Orchestrator
from orchestrator.brain import TurnInfo
from orchestrator.brain.rules import RulesBrain
from orchestrator.cards import load_cards
from orchestrator.events import Notice
from orchestrator.toolbox import all_tools

PHOTO, EDGES = "image/1a2b3c4d.png", "image/5e6f7a8b.png"
TOOLS = all_tools(load_cards())
BRAIN = RulesBrain()


def route(text: str, images: tuple[str, ...] = (PHOTO, EDGES), tools=TOOLS):
    turn = TurnInfo(text, "en", images)
    message = BRAIN.respond([HumanMessage(text)], tools, turn, timeout=10)
    if not message.tool_calls:
        return None, message.content
    [call] = message.tool_calls
    return call["name"], call["args"]


ROUTES = [
    # English
    ("draw a red sports car", "text2image", {"prompt": "a red sports car"}),
    ("Please generate an image of a lighthouse at dusk.", "text2image", {"prompt": "a lighthouse at dusk"}),
    ("describe the image", "image_captioning", {"image": EDGES}),
    (f"what is in {PHOTO}?", "image_captioning", {"image": PHOTO}),
    (
        "how many dogs are there?",
        "visual_question_answering",
        {"image": EDGES, "question": "how many dogs are there?"},
    ),
    ("show me the canny edges", "image2canny", {"image": EDGES}),
    (f"generate a cat from the edges of {PHOTO}", "canny2image", {"image": PHOTO}),
    ("detect the pose", "image2pose", {"image": EDGES}),
    ("make a depth map", "depth2image", {"image": EDGES}),  # "make" + "depth": a picture from depth
    ("estimate the depth", "image2depth", {"image": EDGES}),
    ("remove the dog", "remove_object", {"image": EDGES, "object": "dog"}),
    (
        f"replace the cat in {PHOTO} with a tiger",
        "replace_object",
        {"image": PHOTO, "object": "cat", "replacement": "tiger"},
    ),
    ("remove the background", "remove_background", {"image": EDGES}),
    ("segment the bottle", "segment_object", {"image": EDGES, "object": "bottle"}),
    ("find all the apples", "text2box", {"image": EDGES, "object": "apples"}),
    (
        "make it look like winter",
        "instruct_pix2pix",
        {"image": EDGES, "instruction": "make it look like winter"},
    ),
    ("extend the image to 768x512", "outpainting", {"image": EDGES, "width": "768", "height": "512"}),
    # Chinese
    ("画一只戴帽子的猫", "text2image", {"prompt": "一只戴帽子的猫"}),
    ("请生成一张图片：海边的灯塔", "text2image", {"prompt": "海边的灯塔"}),
    ("描述一下这张图片", "image_captioning", {"image": EDGES}),
    ("图里有几只狗？", "visual_question_answering", {"image": EDGES, "question": "图里有几只狗？"}),
    ("提取边缘", "image2canny", {"image": EDGES}),
    ("根据边缘生成一只猫", "canny2image", {"image": EDGES}),
    ("估计深度", "image2depth", {"image": EDGES}),
    ("把图中的猫换成老虎", "replace_object", {"image": EDGES, "object": "猫", "replacement": "老虎"}),
    ("去掉图中的狗", "remove_object", {"image": EDGES, "object": "狗"}),
    ("去除背景", "remove_background", {"image": EDGES}),
    ("分割出瓶子", "segment_object", {"image": EDGES, "object": "瓶子"}),
    ("检测图中的苹果", "text2box", {"image": EDGES, "object": "苹果"}),
    ("把它变成冬天的样子", "instruct_pix2pix", {"image": EDGES, "instruction": "把它变成冬天的样子"}),
    ("提取人体姿态", "image2pose", {"image": EDGES}),
]


@pytest.mark.parametrize("text, tool, args", ROUTES, ids=[r[0] for r in ROUTES])
def test_routing_table(text, tool, args):
    name, got = route(text)
    assert name == tool
    assert {k: got.get(k) for k in args} == args


def test_only_loaded_tools_are_routed():
    only_detectors = [t for t in TOOLS if t.name == "image2canny"]
    assert route(f"generate a cat from the edges of {PHOTO}", tools=only_detectors)[0] == "image2canny"


def test_image_tools_without_images_ask_for_an_upload():
    name, reply = route("describe the image", images=())
    assert name is None and "upload one first" in reply


def test_unknown_requests_get_help_in_the_turn_language():
    assert "/text2image" in route("hello there")[1]
    turn = TurnInfo("你好", "zh", ())
    assert "规则大脑" in BRAIN.respond([HumanMessage("你好")], TOOLS, turn, timeout=10).content


def test_slash_commands_with_quotes_positional_words_and_latest_image():
    assert route('/text2image prompt="a red car, at night" seed=3') == (
        "text2image",
        {"prompt": "a red car, at night", "seed": "3"},
    )
    assert route("/text2image a red car") == ("text2image", {"prompt": "a red car"})
    assert route("/image2canny") == ("image2canny", {"image": EDGES})
    assert route(f"/image2canny image={PHOTO}") == ("image2canny", {"image": PHOTO})
    assert route("/canny2image image=latest prompt='a cat'") == (
        "canny2image",
        {"image": EDGES, "prompt": "a cat"},
    )
    assert route("/paint_me") == ("paint_me", {})  # the session answers with the real tool list
    assert "Available tools" in route("/help")[1]


def test_after_the_tool_ran_the_reply_reports_it():
    tool_result = ToolMessage("Generated image/99999999.png", tool_call_id="c", name="text2image")
    failed = ToolMessage("Error: no image named x", tool_call_id="d", name="image2canny", status="error")
    turn = TurnInfo("画", "zh", ())
    reply = BRAIN.respond([HumanMessage("画"), tool_result, failed], TOOLS, turn, timeout=10).content
    assert reply == "已运行 text2image：Generated image/99999999.png\nimage2canny 未能运行：no image named x"


@pytest.mark.parametrize(("prompt", "language", "noted"), [("一只红色的猫", "zh", True), ("a red cat", "en", False),
                                                       ("赤い猫", "en", True), ("a red cat", "zh", False)])  # fmt: skip
def test_a_description_the_rules_brain_could_not_translate_is_pointed_out(prompt, language, noted):
    """The rules brain has no LLM to translate; the image models read English."""
    turn = TurnInfo("画一只红色的猫" if language == "zh" else "draw a red cat", language, ())
    call = BRAIN.respond([HumanMessage(turn.text)], TOOLS, turn, timeout=10)
    call.tool_calls[0]["args"]["prompt"] = prompt
    result = ToolMessage(
        "Generated image/99999999.png", tool_call_id=call.tool_calls[0]["id"], name="text2image"
    )
    reply = BRAIN.respond([HumanMessage(turn.text), call, result], TOOLS, turn, timeout=10).content
    assert reply.startswith(("已运行 text2image", "text2image: Generated"))
    assert (("不会翻译" in reply) or ("understand English" in reply)) is noted
    if noted:
        assert ("不会翻译" in reply) is (language == "zh")


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch_module.delenv("OPENAI_BASE_URL", raising=False)
    return Orchestrator("Image2Canny_cpu", weights="tiny", session_root=tmp_path_factory.mktemp("rules"))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_a_session_without_llm_uses_rules_and_says_so_once(orchestrator, tmp_path):
    from PIL import Image

    assert orchestrator.brain.label == "rules" and orchestrator.brain.config.fallback
    session = orchestrator.new_session()
    photo = Image.new("RGB", (64, 64), "white")
    events = list(session.stream("提取边缘", images=[photo]))
    notices = [e for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "未配置语言模型" in notices[0].text
    result = session.chat("/image2canny")  # no words to tell the language: the session's (Chinese) goes on
    assert result.tool_calls[0].tool == "image2canny" and result.tool_calls[0].error is None
    assert result.reply.startswith("已运行 image2canny：") and result.images[0] in result.reply
    assert session.chat("/image2canny please").reply.startswith("image2canny: ")
    assert not any(isinstance(e, Notice) for e in session.stream("/image2canny"))  # once per session
    assert any(
        isinstance(e, Notice) for e in orchestrator.new_session().stream("hi")
    )  # a new session is told


def test_a_slash_command_for_a_tool_that_is_not_loaded_lists_the_real_ones(orchestrator):
    result = orchestrator.new_session().chat("/text2image prompt='a cat'")
    assert result.tool_calls[0].error.startswith("There is no tool named 'text2image'")
    assert "image2canny" in result.reply
