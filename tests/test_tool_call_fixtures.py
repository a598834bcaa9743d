"""Issue 19: raw outputs that real models wrote (tests/fixtures/tool_calls, each with its source) parse to the
right tool and arguments, stay the answer, or become an invalid call the model is told about."""

from __future__ import annotations

import pytest

from benchmarks.parse_rate import check, load_records, session_tools
from orchestrator.brain.parsers import RECOGNISERS, parse_tool_calls
from orchestrator.brain.react import parse_react
from orchestrator.toolbox.generation import text2image
from orchestrator.toolbox.understanding import image_captioning

RECORDS = load_records()
TOOLS = session_tools(RECORDS)
SHAPES = {  # every shape issue 19 lists has recorded outputs, most of them from public threads
    "mistral": 4,
    "hermes": 6,
    "json": 8,
    "llama4": 1,
    "pythonic": 2,
    "structured_chat": 4,
    "glm": 2,
    "function_tag": 1,
    "calling_tool": 1,
    "answers": 5,
}


@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_recorded_output_parses_as_expected(record):
    assert check(record, TOOLS) is None, record["model"]


def test_every_shape_has_recorded_outputs_with_their_source():
    public = {}
    for record in RECORDS:
        assert record["source"] and record["model"] and record["raw"]
        assert sum(k in record for k in ("expected", "answer", "invalid")) == 1, record["id"]
        public[record["format"]] = public.get(record["format"], 0) + record["source"].startswith("https://")
    assert {k: v for k, v in public.items() if k in SHAPES} == public
    assert all(public[shape] >= count for shape, count in SHAPES.items()), public
    assert len(RECORDS) >= 40


def test_parse_rate_is_printed(capsys):
    from benchmarks import parse_rate

    parse_rate.main()
    assert f"{len(RECORDS)} of {len(RECORDS)} parsed as expected" in capsys.readouterr().out


def test_recognisers_are_tried_markers_first():
    names = [name for name, _ in RECOGNISERS]
    assert names[:5] == ["mistral", "hermes", "function_tag", "calling_tool", "llama4"]
    assert (
        names.index("structured_chat")
        < names.index("json_text")
        < names.index("pythonic")
        < names.index("glm")
    )


@pytest.mark.parametrize(
    "text",
    [
        '[TOOL_CALLS]text2image[ARGS]{"prompt": "a cat',
        '<tool_call>{"name": "text2image", "arguments": {"prompt": "a cat"',
        '{"name": "text2image", "arguments": {"prompt": "a cat", "seed": }}',
        '[text2image(prompt="a cat", seed=',
        '<|python_start|>{"name": "text2image", "parameters": {"prompt": <|python_end|>',
        'Action:\n```\n{"action": "text2image", "action_input": {"prompt": "a cat"\n',
    ],
)
def test_truncated_or_broken_calls_become_invalid_calls_with_one_sentence(text):
    message = parse_tool_calls(text, ["text2image"])
    assert message.tool_calls == []
    [invalid] = message.invalid_tool_calls
    assert invalid["name"] == "text2image"
    error = invalid["error"]
    assert error and "\n" not in error and error.count(". ") == 0 and len(error) < 120


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2, 3] are the first numbers.",
        '{"name": "Bingo", "age": 30}',
        "Use text2image(prompt=...) when you want a picture.",
        "I can't call [TOOLS] here, sorry.",
        "画好了：image/1a2b3c4d.png",
    ],
)
def test_text_that_is_no_call_stays_the_answer(text):
    message = parse_tool_calls(text, ["text2image"])
    assert message.tool_calls == [] and message.invalid_tool_calls == []
    assert message.content == text


def test_final_answer_blobs_unwrap_to_their_text():
    blob = 'Thought: done\nAction:\n```json\n{\n  "action": "Final Answer",\n  "action_input": "这是一只猫。"\n}\n```'
    assert parse_tool_calls(blob, ["text2image"]).content == "这是一只猫。"
    assert parse_react(blob, [text2image]).content == "这是一只猫。"


def test_react_reads_structured_chat_blobs_with_a_bare_input():
    text = 'Action:\n```\n{"action": "image_captioning", "action_input": "image/1a2b3c4d.png"}\n```'
    message = parse_react(text, [text2image, image_captioning])
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("image_captioning", {"image": "image/1a2b3c4d.png"})
    ]
