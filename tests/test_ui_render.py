"""How a turn looks in the chat: each tool call a collapsible step, progress, images inline, the reply streamed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("gradio")

from orchestrator.events import (  # noqa: E402
    ImageStored,
    Notice,
    ReplyDelta,
    ToolCall,
    ToolFinished,
    ToolProgress,
    ToolStarted,
    TurnFinished,
    TurnResult,
)
from orchestrator.manager import ModelStatus  # noqa: E402
from orchestrator.ui.app import examples_for, turn_concurrency  # noqa: E402
from orchestrator.ui.i18n import Strings, language_choices  # noqa: E402
from orchestrator.ui.panel import models_html  # noqa: E402
from orchestrator.ui.render import TurnView, pair_uploads, progress_bar, user_message  # noqa: E402

EDGES = "image/0000beef.png"


def view(language: str = "en") -> TurnView:
    return TurnView(Strings(language), lambda name: f"/sessions/s1/{name}", clock=iter(range(100)).__next__)


def test_a_tool_call_is_a_step_that_spins_then_shows_duration_result_and_image():
    turn = view()
    turn.apply(ToolStarted("c1", "image2canny", {"image": "image/1a2b3c4d.png"}))
    step = turn.messages[0]
    assert step.metadata["title"] == "🛠️ image2canny" and step.metadata["status"] == "pending"
    assert "image/1a2b3c4d.png" in step.content

    turn.apply(ToolProgress("c1", "image2canny", "loading Image2Canny on cuda:0"))
    assert (
        "loading Image2Canny on cuda:0" in step.content
        and step.metadata["log"] == "loading Image2Canny on cuda:0"
    )

    call = ToolCall("image2canny", {"image": "image/1a2b3c4d.png"}, f"Edges: {EDGES}", [EDGES], None, 1.234)
    turn.apply(ToolFinished("c1", call))
    assert step.metadata["status"] == "done" and step.metadata["duration"] == 1.23
    assert f"Edges: {EDGES}" in step.content
    image = turn.messages[1]
    assert image.role == "assistant" and image.content == [
        {"path": f"/sessions/s1/{EDGES}", "alt_text": EDGES}
    ]


def test_diffusion_steps_show_a_progress_bar():
    turn = view()
    turn.apply(ToolStarted("c1", "text2image", {"prompt": "a lighthouse"}))
    turn.apply(ToolProgress("c1", "text2image", "step 3/20", 3, 20))
    assert progress_bar(3, 20) in turn.messages[0].content and "3/20" in turn.messages[0].content
    turn.apply(ToolProgress("c1", "text2image", "step 20/20", 20, 20))
    assert "▱" not in turn.messages[0].content and turn.messages[0].content.count("▰") == 12


def test_a_failed_call_says_what_went_wrong():
    turn = view()
    turn.apply(ToolStarted("c1", "image2canny", {"image": "nope"}))
    call = ToolCall("image2canny", {"image": "nope"}, "Error: There is no image named 'nope'.",
                    error="There is no image named 'nope'.", seconds=0.01)  # fmt: skip
    turn.apply(ToolFinished("c1", call))
    step = turn.messages[0]
    assert step.metadata["title"].startswith("❌") and "There is no image named 'nope'." in step.content
    assert len(turn.messages) == 1  # no image


def test_the_reply_streams_into_one_message_after_the_steps():
    turn = view()
    turn.apply(Notice("No LLM configured: using the rules brain."))
    turn.apply(ToolStarted("c1", "image_captioning", {"image": EDGES}))
    turn.apply(ToolFinished("c1", ToolCall("image_captioning", {"image": EDGES}, "a cat", seconds=0.5)))
    for piece in ["It is ", "a cat", "."]:
        assert turn.apply(ReplyDelta(piece))
    assert turn.messages[-1].content == "It is a cat." and turn.reply == "It is a cat."
    turn.apply(TurnFinished(TurnResult("what is it?", "It is a cat.")))
    assert [m.content for m in turn.messages].count("It is a cat.") == 1
    assert "rules brain" in turn.messages[0].content


def test_turn_end_fills_in_a_reply_and_images_that_were_not_streamed_and_stops_spinners():
    turn = view()
    turn.shown.add("image/upload01.png")
    turn.apply(ToolStarted("c1", "text2image", {"prompt": "x"}))
    turn.apply(TurnFinished(TurnResult("draw", "Here it is.", images=["image/upload01.png", EDGES])))
    assert turn.messages[0].metadata["status"] == "done"
    assert turn.messages[1].content == "Here it is."
    assert turn.messages[2].content[0]["alt_text"] == EDGES and len(turn.messages[2].content) == 1
    empty = view()
    empty.apply(TurnFinished(TurnResult("hi")))
    assert empty.messages[0].content == "(no reply)"


def test_user_message_shows_text_images_and_refused_files():
    message = user_message(
        "show me the edges", [("image/1a2b3c4d.png", "/s/image/1a2b3c4d.png")], ["notes.png"]
    )
    assert message.role == "user"
    assert "show me the edges" in message.content[0] and "notes.png" in message.content[0]
    assert message.content[1] == {"path": "/s/image/1a2b3c4d.png", "alt_text": "image/1a2b3c4d.png"}


def test_strings_exist_in_both_languages():
    en, zh = Strings("en"), Strings("zh")
    assert set(en._text) == set(zh._text) and set(en.examples) == set(zh.examples)
    assert zh["clear"] == "清空" and Strings("fr").language == "en"
    assert language_choices() == [("English", "en"), ("中文", "zh")]


def fake_orchestrator(weights: str = "tiny", brain: str = "rules") -> SimpleNamespace:
    statuses = [
        ModelStatus("Text2Image", "cuda:0", "resident", 2133, 8192, 1, compile_state="compiling"),
        ModelStatus("ImageCaptioning", "cuda:0", "offloaded", 494, 8192, 1),
        ModelStatus("Image2Canny", "cpu", "not loaded", 0, None, 0),
    ]
    manager = SimpleNamespace(
        status=lambda: statuses, resident_mb=lambda device: 2133 if device == "cuda:0" else 0
    )
    plan = SimpleNamespace(budget_of=lambda device: 8192 if device == "cuda:0" else None,
                           placements={s.card: SimpleNamespace(device=s.device) for s in statuses})  # fmt: skip
    tools = {"text2image": None, "image2canny": None}
    from orchestrator.cards import load_cards

    return SimpleNamespace(
        manager=manager, plan=plan, weights=weights, brain=SimpleNamespace(label=brain), tools=tools,
        cards=load_cards(), resolver=SimpleNamespace(model_dir=None),
    )  # fmt: skip


def test_models_panel_shows_device_state_and_vram_against_budget():
    html = models_html(fake_orchestrator(), Strings("en"))
    assert 'data-card="Text2Image" data-state="resident"' in html and "2,133 of 8,192 MB" in html
    assert "evicted" in html and "not loaded" in html and "no budget" in html
    assert "cuda:0: 2,133 MB resident of 8,192 MB" in html
    assert "Tiny test weights" in html and "rules brain" in html
    plain = models_html(fake_orchestrator("hub", "openai"), Strings("zh"))
    assert "Tiny" not in plain and "规则" not in plain and "已驻留" in plain
    assert "权重" not in plain  # Image2Canny, the only card not loaded, reads no weights


def test_models_panel_says_which_models_are_compiled_compiling_or_eager():
    html = models_html(fake_orchestrator(), Strings("en"))
    assert 'data-compile="compiling"' in html and "compiling in the background" in html
    assert html.count("data-compile=") == 1, "a card whose family compiles nothing says nothing about it"
    assert "正在后台编译" in models_html(fake_orchestrator(), Strings("zh"))


def test_concurrency_is_per_device_and_examples_follow_the_loaded_tools():
    orchestrator = fake_orchestrator()
    assert turn_concurrency(orchestrator) == 2 and turn_concurrency(orchestrator, per_device=2) == 4
    texts = [sample[0]["text"] for sample in examples_for(orchestrator, Strings("en"))]
    assert texts == ["Draw a lighthouse on a cliff at sunset", "Show me the edges of the last image"]


def test_models_panel_says_which_hub_weights_are_on_disk(tmp_path):
    import shutil

    from orchestrator.engine import Orchestrator
    from orchestrator.weights import WeightResolver

    sd15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    shutil.copytree(WeightResolver("tiny").resolve(sd15), tmp_path / "models" / sd15)
    orch = Orchestrator("Text2Image_cpu,ImageCaptioning_cpu", weights="hub", model_dir=tmp_path / "models",
                        brain="rules", session_root=tmp_path)  # fmt: skip
    html = models_html(orch, Strings("en"))
    text2image = html[html.index('data-card="Text2Image"') :].split('data-card="')[1]
    captioning = html[html.index('data-card="ImageCaptioning"') :]
    assert "weights on disk (" in text2image
    assert "weights not downloaded: python -m orchestrator download --load ImageCaptioning_cpu" in captioning


def test_the_user_bubble_pairs_each_file_sent_with_its_stored_image_and_strikes_the_refused():
    files = ["/tmp/a/cat.png", "/tmp/b/notes.txt", "/tmp/c/cat.png"]  # two files may share a name
    stored = [ImageStored("image/00000001.png", "cat.png"), ImageStored("image/00000002.png", "cat.png")]
    accepted, refused = pair_uploads(files, stored, lambda name: f"/sessions/s1/{name}")
    assert accepted == [
        ("image/00000001.png", "/sessions/s1/image/00000001.png"),
        ("image/00000002.png", "/sessions/s1/image/00000002.png"),
    ]
    assert refused == ["notes.txt"]


def test_words_before_a_tool_call_stay_above_it_and_a_replaced_reply_is_not_appended():
    turn = view()
    for piece in ["Let me ", "look."]:
        turn.apply(ReplyDelta(piece))
    turn.apply(ToolStarted("c1", "image_captioning", {"image": EDGES}))
    turn.apply(ToolFinished("c1", ToolCall("image_captioning", {"image": EDGES}, "a cat", seconds=0.5)))
    turn.apply(ReplyDelta("It is a"))
    turn.apply(ReplyDelta("The server broke off; ask again.", replace=True))
    turn.apply(TurnFinished(TurnResult("what is it?", "The server broke off; ask again.")))
    contents = [m.content for m in turn.messages]
    assert contents[0] == "Let me look." and turn.messages[1].metadata["title"] == "🛠️ image_captioning"
    assert contents[2:] == ["The server broke off; ask again."]
