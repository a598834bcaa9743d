"""Understanding tools (BLIP): describe an image, answer a question about it."""

from __future__ import annotations

from typing import Annotated

from ..errors import ToolError
from ..tools import ImageName, ToolContext, tool


@tool(card="ImageCaptioning")
def image_captioning(ctx: ToolContext, image: Annotated[ImageName, "The image to describe"]) -> str:
    """Describe what an image shows in one English sentence. Use it when the user asks what is in an
    image or to describe it; its answer is the caption, no new image is made."""
    with ctx.model() as blip:
        caption = blip.caption(ctx.open(image))
    if not caption:
        return f"The captioning model produced no description of {image}."
    return f"Caption of {image}: {caption}"


@tool(card="VisualQuestionAnswering")
def visual_question_answering(
    ctx: ToolContext,
    image: Annotated[ImageName, "The image the question is about"],
    question: Annotated[str, "The question about the image, in English"],
) -> str:
    """Answer a question about an image (what color, how many, where, is there ...). Use it when the
    user asks something about the content of an image; the answer is short text, no new image is made."""
    if not question.strip():
        raise ToolError("visual_question_answering needs a question about the image; the question was empty.")
    with ctx.model() as vqa:
        answer = vqa.answer(ctx.open(image), question)
    if not answer:
        return f"The question-answering model gave no answer to '{question}' about {image}."
    return f"Answer to '{question}' about {image}: {answer}"


TOOLS = [image_captioning, visual_question_answering]
