"""Declarative tools: schemas derived from typed functions, and every bad argument a clear ToolError."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from PIL import Image

from orchestrator.cards import load_cards
from orchestrator.errors import ToolError
from orchestrator.images import ImageStore
from orchestrator.tools import TOOL_NAME_PATTERN, ImageName, ToolContext, tool


@tool(card="Text2Image")
def paint(
    ctx: ToolContext,
    prompt: Annotated[str, "what to paint"],
    image: Annotated[ImageName, "the picture to start from"],
    steps: Annotated[int, "denoising steps"] = 20,
    strength: Annotated[float | None, "how much to change"] = None,
    style: Annotated[Literal["photo", "sketch"], "the look"] = "photo",
    tiled: Annotated[bool, "tile the result"] = False,
) -> str:
    """Paint over an image.

    Use it for repainting."""
    return "done"


@pytest.fixture
def store(tmp_path):
    s = ImageStore(tmp_path)
    s.add(Image.new("RGB", (64, 64)), tool="test", args={}, parents=[], seed=None)
    return s


def test_schema_is_json_schema_for_the_llm():
    assert paint.name == "paint" and paint.description == "Paint over an image. Use it for repainting."
    schema = paint.schema()
    assert schema["required"] == ["prompt", "image"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["steps"] == {"type": "integer", "description": "denoising steps", "default": 20}
    assert props["strength"]["type"] == "number" and "default" not in props["strength"]
    assert props["style"]["enum"] == ["photo", "sketch"]
    assert props["tiled"]["type"] == "boolean"
    assert "image name" in props["image"]["description"]


def test_valid_arguments_are_coerced(store):
    name = store.latest
    args = paint.validate(
        {"prompt": "a cat", "image": name.removeprefix("image/"), "steps": "12", "tiled": "yes"}, store
    )
    assert args == {
        "prompt": "a cat",
        "image": name,
        "steps": 12,
        "strength": None,
        "style": "photo",
        "tiled": True,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"image": "x"}, "paint needs the argument 'prompt'; it takes prompt, image, steps=…"),
        ({"prompt": "a", "image": "LATEST", "colour": "red"}, "paint has no argument 'colour'"),
        (
            {"prompt": "a", "image": "image/deadbeef.png"},
            "argument 'image': There is no image named 'image/deadbeef.png'",
        ),
        ({"prompt": "a", "image": "../../etc/passwd"}, "There is no image named '../../etc/passwd'"),
        (
            {"prompt": "a", "image": "LATEST", "steps": "many"},
            "argument 'steps' must be a whole number, got 'many'",
        ),
        ({"prompt": "a", "image": "LATEST", "steps": 2.5}, "argument 'steps' must be a whole number"),
        ({"prompt": "a", "image": "LATEST", "strength": float("nan")}, "must be a number, got NaN"),
        ({"prompt": "a", "image": "LATEST", "style": "oil"}, "argument 'style' must be one of photo, sketch"),
        ({"prompt": "a", "image": "LATEST", "tiled": "perhaps"}, "must be true or false"),
        ({"prompt": ["a"], "image": "LATEST"}, "argument 'prompt' must be text, got list"),
        ({"prompt": "x" * 5000, "image": "LATEST"}, "is 5000 characters long"),
        ("prompt=a cat", "paint takes named arguments"),
    ],
)
def test_bad_arguments_are_tool_errors_the_model_can_fix(store, args, message):
    if isinstance(args, dict) and args.get("image") == "LATEST":
        args["image"] = store.latest
    with pytest.raises(ToolError) as err:
        paint.validate(args, store)
    assert message in str(err.value)


def test_every_card_tool_is_declared_well():
    from orchestrator.toolbox import all_tools

    cards = load_cards()
    tools = all_tools(cards)
    assert sorted(t.name for t in tools) == sorted(n for c in cards.cards.values() for n in c.tools)
    for t in tools:
        assert TOOL_NAME_PATTERN.match(t.name), t.name
        assert len(t.description) > 30, f"{t.name} needs a description the LLM can act on"
        assert t.schema()["type"] == "object"


def test_a_tool_needs_a_docstring_and_annotations():
    with pytest.raises(TypeError, match="needs a docstring"):
        tool(card="X")(lambda ctx: "")

    def bare(ctx: ToolContext, prompt: str) -> str:
        """Has a docstring."""

    with pytest.raises(TypeError, match="annotate it as Annotated"):
        tool(card="X")(bare)
