"""Tool calls written as text by real model families, and the ReAct format: recorded outputs, parsed."""

from __future__ import annotations

import pytest

from orchestrator.brain.parsers import loads_lenient, parse_tool_calls
from orchestrator.brain.react import parse_react, react_messages
from orchestrator.toolbox.generation import inpainting, text2image
from orchestrator.toolbox.understanding import image_captioning

NAMES = ["text2image", "image2canny", "canny2image"]
TOOLS = [text2image, inpainting, image_captioning]


def calls(message) -> list[tuple[str, dict]]:
    return [(c["name"], c["args"]) for c in message.tool_calls]


RECORDED = {
    "qwen2.5 one call": (
        '<tool_call>\n{"name": "text2image", "arguments": {"prompt": "a red car", "seed": 3}}\n</tool_call>',
        [("text2image", {"prompt": "a red car", "seed": 3})],
    ),
    "qwen2.5 two calls": (
        '<tool_call>\n{"name": "image2canny", "arguments": {"image": "image/1a2b3c4d.png"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "text2image", "arguments": {"prompt": "a cat"}}\n</tool_call>',
        [("image2canny", {"image": "image/1a2b3c4d.png"}), ("text2image", {"prompt": "a cat"})],
    ),
    "qwen3 thinking, then a call": (
        "<think>\nThe user wants a cat. I should call text2image.\n</think>\n\n"
        '<tool_call>\n{"name": "text2image", "arguments": {"prompt": "a cat"}}\n</tool_call>',
        [("text2image", {"prompt": "a cat"})],
    ),
    "hermes, arguments as a JSON string, no closing tag": (
        '<tool_call>\n{"name": "text2image", "arguments": "{\\"prompt\\": \\"a cat\\"}"}',
        [("text2image", {"prompt": "a cat"})],
    ),
    "llama-3.1 json": (
        '{"name": "text2image", "parameters": {"prompt": "a lighthouse at dusk"}}',
        [("text2image", {"prompt": "a lighthouse at dusk"})],
    ),
    "llama-3.1 python_tag, two calls": (
        '<|python_tag|>{"name": "image2canny", "parameters": {"image": "image/1a2b3c4d.png"}}; '
        '{"name": "text2image", "parameters": {"prompt": "a cat"}}',
        [("image2canny", {"image": "image/1a2b3c4d.png"}), ("text2image", {"prompt": "a cat"})],
    ),
    "fenced json from a small model": (
        '```json\n{"name": "text2image", "arguments": {"prompt": "a cat"}}\n```',
        [("text2image", {"prompt": "a cat"})],
    ),
    "glm-4": (
        'text2image\n{"prompt": "a cat sitting on a sofa"}',
        [("text2image", {"prompt": "a cat sitting on a sofa"})],
    ),
    "glm-4.5": (
        "<tool_call>text2image\n<arg_key>prompt</arg_key>\n<arg_value>a cat</arg_value>\n"
        "<arg_key>seed</arg_key>\n<arg_value>7</arg_value>\n</tool_call>",
        [("text2image", {"prompt": "a cat", "seed": 7})],
    ),
    "chatglm3": (
        "text2image\n ```python\ntool_call(prompt='a cat', seed=2)\n```",
        [("text2image", {"prompt": "a cat", "seed": 2})],
    ),
}


@pytest.mark.parametrize("name", list(RECORDED))
def test_recorded_tool_calls_are_parsed(name):
    text, expected = RECORDED[name]
    message = parse_tool_calls(text, NAMES)
    assert calls(message) == expected
    assert message.invalid_tool_calls == []
    assert all(c["id"] for c in message.tool_calls)


def test_text_around_a_call_is_kept_as_content():
    message = parse_tool_calls(
        'I will draw it.\n<tool_call>\n{"name": "text2image", "arguments": {"prompt": "a cat"}}\n</tool_call>',
        NAMES,
    )
    assert message.content == "I will draw it."
    assert calls(message) == [("text2image", {"prompt": "a cat"})]


@pytest.mark.parametrize(
    "text",
    [
        "Here is your picture: image/1a2b3c4d.png.",
        '{"answer": 42}',  # JSON that is not a call
        "text2image is the tool I would use, but I need a prompt.",  # a tool name without arguments
        "",
    ],
)
def test_plain_answers_stay_answers(text):
    message = parse_tool_calls(text, NAMES)
    assert message.tool_calls == [] and message.invalid_tool_calls == []
    assert message.content == text.strip()


def test_broken_arguments_become_an_invalid_call_the_model_can_read():
    message = parse_tool_calls(
        '<tool_call>\n{"name": "text2image", "arguments": {"prompt": "a cat", </tool_call>', NAMES
    )
    assert message.tool_calls == []
    [invalid] = message.invalid_tool_calls
    assert invalid["name"] == "text2image" and invalid["error"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"prompt": "a cat"}', {"prompt": "a cat"}),
        ("{'prompt': 'a cat', 'seed': 3}", {"prompt": "a cat", "seed": 3}),  # Python literal
        ('{"prompt": "a cat",}', {"prompt": "a cat"}),  # trailing comma
        ('Sure: {"prompt": "a {red} cat"} done', {"prompt": "a {red} cat"}),  # surrounded, braces in a string
        ('```\n{"prompt": "a cat"}\n```', {"prompt": "a cat"}),
    ],
)
def test_lenient_json(raw, expected):
    assert loads_lenient(raw) == expected


def test_lenient_json_still_refuses_garbage():
    with pytest.raises(ValueError):
        loads_lenient('{"prompt": "a cat"')


# -- ReAct ------------------------------------------------------------------------------------------
def test_react_action_with_json_input():
    text = 'Thought: I need to draw\nAction: text2image\nAction Input: {"prompt": "a cat", "seed": 1}'
    assert calls(parse_react(text, TOOLS)) == [("text2image", {"prompt": "a cat", "seed": 1})]


def test_react_tolerates_python_dicts_bare_values_and_invented_observations():
    text = "Action: `text2image`\nAction Input: a cat in the snow\nObservation: Generated image/00000000.png"
    assert calls(parse_react(text, TOOLS)) == [("text2image", {"prompt": "a cat in the snow"})]
    text = "Action: image_captioning\nAction Input: {'image': 'image/1a2b3c4d.png'}"
    assert calls(parse_react(text, TOOLS)) == [("image_captioning", {"image": "image/1a2b3c4d.png"})]


def test_react_final_answer_and_unparseable_output_become_the_reply():
    assert parse_react("Thought: done\nFinal Answer: Here is image/1a2b3c4d.png", TOOLS).content == (
        "Here is image/1a2b3c4d.png"
    )
    assert parse_react("Action: None\nAction Input: Hello there!", TOOLS).content == "Hello there!"
    # TaskMatrix's "Could not parse LLM output": here it is simply the answer
    message = parse_react("Thought: The image shows a cat on a sofa.", TOOLS)
    assert message.content == "The image shows a cat on a sofa." and message.tool_calls == []


def test_react_two_arguments_without_json_is_an_invalid_call():
    message = parse_react("Action: inpainting\nAction Input: image/1a2b3c4d.png, a dog", TOOLS)
    assert message.tool_calls == [] and message.invalid_tool_calls[0]["name"] == "inpainting"


def test_react_history_is_plain_text_turns():
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    history = [
        SystemMessage("rules"),
        HumanMessage("draw a cat"),
        AIMessage("", tool_calls=[{"name": "text2image", "args": {"prompt": "a cat"}, "id": "c1"}]),
        ToolMessage("Generated image/1a2b3c4d.png", tool_call_id="c1", name="text2image"),
    ]
    out = react_messages(history, TOOLS)
    assert [type(m).__name__ for m in out] == ["SystemMessage", "HumanMessage", "AIMessage", "HumanMessage"]
    assert "Action Input" in out[0].content and "text2image" in out[0].content
    assert out[2].content.endswith('Action: text2image\nAction Input: {"prompt": "a cat"}')
    assert out[3].content == "Observation: Generated image/1a2b3c4d.png"
