"""Stable Diffusion tools: text-to-image (and its quick draft) and inpainting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from foundation_models.stable_diffusion import Picture

from ..tools import ImageName, ToolContext, tool

Prompt = Annotated[str, "What the picture should show, in English"]
Seed = Annotated[int | None, "Random seed; the same seed and prompt give the same picture"]
Negative = Annotated[
    str | None, "What the picture must not show, in English (added to the default negative prompt)"
]


def snap64(value: int | None, default: int) -> int:
    """A side length for SD: a multiple of 64 between 64 and 1024."""
    return min(1024, max(64, int(round((value or default) / 64)) * 64))


def sd_prompts(ctx: ToolContext, prompt: str, options: Mapping[str, Any] | None = None,
               negative: str | None = None) -> tuple[str, str]:  # fmt: skip
    """The prompt with the card's quality suffix, and its negative prompt (``options``: another card's) with the
    call's own ``negative`` before it."""
    options = ctx.options if options is None else options
    default = options.get("negative_prompt", "")
    negative = ", ".join(p for p in ((negative or "").strip(), default) if p)
    return prompt + options.get("prompt_suffix", ""), negative


def diffusion_settings(options: Mapping[str, Any], width: int, height: int, steps: int) -> dict[str, Any]:
    """What the pictures of one pipeline call share (a card's calls with equal settings may run as one batch; the
    card fixes the pipeline and its scheduler): the size, and the card's steps and guidance (``steps``: the
    default)."""
    return {"width": width, "height": height, "steps": int(options.get("num_inference_steps", steps)),
            "guidance_scale": float(options.get("guidance_scale", 7.5))}  # fmt: skip


def step_reporter(ctx: ToolContext):
    return lambda step, total: ctx.progress(f"step {step}/{total}", step, total)


@tool(card="Text2Image")
def text2image(
    ctx: ToolContext,
    prompt: Prompt,
    width: Annotated[int | None, "Width in pixels (multiple of 64)"] = None,
    height: Annotated[int | None, "Height in pixels (multiple of 64)"] = None,
    seed: Seed = None,
    negative_prompt: Negative = None,
) -> str:
    """Generate a new image from a text description. Use it when the user asks to draw, create or
    imagine a picture. The prompt must be in English and describe the picture."""
    side = int(ctx.options.get("resolution", 512))
    width, height = snap64(width, side), snap64(height, side)
    seed = ctx.new_seed(seed)
    positive, negative = sd_prompts(ctx, prompt, negative=negative_prompt)
    settings = diffusion_settings(ctx.options, width, height, steps=20)
    image = ctx.batched(Picture(positive, negative, seed), settings, step_reporter(ctx))
    name = ctx.save(image, seed=seed)
    return f"Generated {name} ({width}×{height}, seed {seed}) from the prompt: {prompt}"


@tool(card="Text2ImageDraft")
def text2image_draft(
    ctx: ToolContext,
    prompt: Prompt,
    width: Annotated[int | None, "Width in pixels (multiple of 64)"] = None,
    height: Annotated[int | None, "Height in pixels (multiple of 64)"] = None,
    seed: Seed = None,
) -> str:
    """Draw a quick draft of an image from a text description, in a few steps: several times faster than
    text2image, rougher in detail. Use it only when the user asks for a quick draft, sketch or preview;
    otherwise use text2image. The prompt must be in English and describe the picture."""
    side = int(ctx.options.get("resolution", 512))
    width, height = snap64(width, side), snap64(height, side)
    seed = ctx.new_seed(seed)
    positive, negative = sd_prompts(ctx, prompt)
    steps = int(ctx.options.get("num_inference_steps", 4))
    with ctx.model() as sd:
        image = sd.generate(positive, negative, width, height, steps, float(ctx.options.get("guidance_scale", 1.0)),
                            seed, step_reporter(ctx))  # fmt: skip
    name = ctx.save(image, seed=seed)
    return f"Drafted {name} ({width}×{height}, {steps} steps, seed {seed}) from the prompt: {prompt}"


@tool(card="Inpainting")
def inpainting(
    ctx: ToolContext,
    image: Annotated[ImageName, "The image to repaint"],
    mask: Annotated[ImageName, "A mask image of the same picture: white where to repaint, black to keep"],
    prompt: Annotated[str, "What to paint in the masked area, in English"],
    seed: Seed = None,
) -> str:
    """Repaint the white area of a mask image in an image, following a text prompt. Use it when a
    mask already exists (for example from segment_object); to remove or replace a named object, prefer
    remove_object or replace_object."""
    picture = ctx.open(image)
    mask_image = ctx.open(mask).convert("L").resize(picture.size)
    seed = ctx.new_seed(seed)
    positive, negative = sd_prompts(ctx, prompt)
    settings = diffusion_settings(ctx.options, *picture.size, steps=50)
    item = Picture(positive, negative, seed, image=picture, mask_image=mask_image)
    result = ctx.batched(item, settings, step_reporter(ctx))
    name = ctx.save(result.resize(picture.size), parents=[image, mask], seed=seed)
    return f"Inpainted {image} where {mask} is white, following '{prompt}': {name}"


TOOLS = [text2image, text2image_draft, inpainting]
