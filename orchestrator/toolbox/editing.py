"""Grounding, segmentation and editing tools: boxes (GroundingDINO), masks (SAM), and edits built on them.

Composite tools run their dependency cards one after another (never one ``with ctx.model`` inside
another), so a device only needs room for one model at a time. Finding nothing is an observation.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from PIL import Image

from ..errors import ToolError
from ..tools import ImageName, ToolContext, tool
from .generation import Seed, sd_prompts, step_reporter
from .masks import (
    box_mask,
    box_text,
    dilate,
    draw_boxes,
    extend_canvas,
    fit_size,
    mask_image,
    overlay,
    paste_masked,
    union,
)

Picture = Annotated[ImageName, "The image to work on"]
Object = Annotated[str, "What to look for, in English (for example 'dog' or 'red car')"]
MAX_BOXES = 10  # the best-scoring boxes kept per request
MAX_SIDE = 2048  # the largest canvas outpainting makes
MAIN_OBJECT_QUESTION = "what is the main object in the image?"
BACKGROUND_QUESTION = "what is in the background of the image?"


# -- steps shared by the tools -------------------------------------------------------------------
def _detect(ctx: ToolContext, picture: Image.Image, text: str) -> list[Any]:
    """GroundingDINO's boxes for ``text``, best first, at most MAX_BOXES (thresholds from Text2Box's card)."""
    ctx.progress(f"looking for '{text}'")
    with ctx.model("Text2Box") as dino:
        return dino.detect(picture, text)[:MAX_BOXES]


def _segment(ctx: ToolContext, picture: Image.Image, text: str) -> tuple[list[Any], list[np.ndarray]]:
    """Boxes for ``text``, then one SAM mask per box (the box itself where SAM's mask is empty)."""
    found = _detect(ctx, picture, text)
    if not found:
        return [], []
    ctx.progress(f"segmenting {len(found)} '{text}' region(s)")
    with ctx.model("Segmenting") as sam:
        masks = sam.masks_from_boxes(picture, [d.box for d in found])
    return found, [m if m.any() else box_mask(d.box, picture.size) for d, m in zip(found, masks)]


def _inpaint(ctx: ToolContext, picture: Image.Image, mask: np.ndarray, prompt: str, seed: int) -> Image.Image:
    """Repaint the masked area with the Inpainting card at a working size; pixels outside the mask are kept."""
    options = ctx.options_of("Inpainting")
    size = fit_size(picture.size, int(options.get("resolution", 512)))
    positive, negative = sd_prompts(ctx, prompt, options)
    with ctx.model("Inpainting") as sd:
        result = sd.inpaint(picture.resize(size, Image.Resampling.LANCZOS), mask_image(mask).resize(size), positive,
                            negative, int(options.get("num_inference_steps", 50)),
                            float(options.get("guidance_scale", 7.5)), seed, step_reporter(ctx))  # fmt: skip
    return paste_masked(picture, result.resize(picture.size, Image.Resampling.LANCZOS), mask, feather=2)


# -- grounding and segmentation ------------------------------------------------------------------
@tool(card="Text2Box")
def text2box(ctx: ToolContext, image: Picture, object: Object) -> str:
    """Find where things named in text are in an image and draw labelled boxes around them. Use it
    when the user asks to detect, locate or box something; the answer lists each box in pixels."""
    picture = ctx.open(image)
    found = _detect(ctx, picture, object)
    if not found:
        return f"Found no '{object}' in {image}; no box was drawn."
    name = ctx.save(draw_boxes(picture, found), parents=[image])
    boxes = "; ".join(f"{d.label} ({d.score:.2f}) at {box_text(d.box)}" for d in found)
    return f"Found {len(found)} box(es) for '{object}' in {image}, drawn in {name}: {boxes} (x0, y0, x1, y1 in pixels)."


@tool(card="Segmenting")
def segment_anything(ctx: ToolContext, image: Picture) -> str:
    """Split an image into all its segments with Segment Anything and colour each one. Use it when the
    user asks to segment an image without naming an object; to segment a named object use segment_object."""
    picture = ctx.open(image)
    with ctx.model() as sam:
        masks = sam.segment_everything(picture)
    if not masks:
        return f"Segment Anything found no segments in {image}; no image was made."
    name = ctx.save(overlay(picture, masks), parents=[image])
    return f"Segmented {image} into {len(masks)} region(s), each in its own colour: {name}"


@tool(card="ObjectSegmenting")
def segment_object(ctx: ToolContext, image: Picture, object: Object) -> str:
    """Cut out the object(s) named in text: makes a coloured overlay and a black-and-white mask (white
    = the object) that inpainting can use. Use it when the user asks to segment or mask something."""
    picture = ctx.open(image)
    found, masks = _segment(ctx, picture, object)
    mask = union(masks, picture.size)
    if not mask.any():
        return f"Found no '{object}' to segment in {image}; no mask was made."
    shown = ctx.save(overlay(picture, masks), parents=[image])
    name = ctx.save(mask_image(mask), parents=[image])
    return (f"Segmented {len(found)} '{object}' region(s) in {image}: overlay {shown}, "
            f"mask {name} (white = {object}).")  # fmt: skip


# -- editing -------------------------------------------------------------------------------------
def _replace(
    ctx: ToolContext, image: str, object: str, prompt: str, seed: int | None
) -> tuple[str | None, int]:
    """Box, mask, dilate, inpaint; the new image's name (None when the object was not found) and its count."""
    picture = ctx.open(image)
    found, masks = _segment(ctx, picture, object)
    mask = dilate(union(masks, picture.size), int(ctx.options.get("mask_dilation", 15)))
    if not mask.any():
        return None, 0
    seed = ctx.new_seed(seed)
    ctx.progress(f"repainting {len(found)} '{object}' region(s)")
    return ctx.save(_inpaint(ctx, picture, mask, prompt, seed), parents=[image], seed=seed), len(found)


@tool(card="ImageEditing")
def remove_object(ctx: ToolContext, image: Picture, object: Object, seed: Seed = None) -> str:
    """Remove the object(s) named in text from an image and fill the hole with background. Use it when
    the user asks to remove, erase or delete something from a picture."""
    name, count = _replace(ctx, image, object, "background", seed)
    if name is None:
        return f"Found no '{object}' in {image}; nothing was removed."
    return f"Removed {count} '{object}' region(s) from {image}: {name}"


@tool(card="ImageEditing")
def replace_object(
    ctx: ToolContext,
    image: Picture,
    object: Annotated[str, "What to replace, in English (for example 'dog')"],
    replacement: Annotated[str, "What to paint instead, in English (for example 'a white cat')"],
    seed: Seed = None,
) -> str:
    """Replace the object(s) named in text with something else, keeping the rest of the image. Use it
    when the user asks to replace, swap or turn one thing in a picture into another."""
    name, count = _replace(ctx, image, object, replacement, seed)
    if name is None:
        return f"Found no '{object}' in {image}; nothing was replaced."
    return f"Replaced {count} '{object}' region(s) in {image} with '{replacement}': {name}"


@tool(card="BackgroundRemoving")
def remove_background(ctx: ToolContext, image: Picture) -> str:
    """Keep the main object of an image and make the background white. Use it when the user asks to
    remove or cut out the background."""
    picture = ctx.open(image)
    with ctx.model("VisualQuestionAnswering") as vqa:
        subject = vqa.answer(picture, MAIN_OBJECT_QUESTION) or "main object"
    _, masks = _segment(ctx, picture, subject)
    mask = union(masks, picture.size)
    if not mask.any():
        return f"Could not find the main object ('{subject}') in {image}; the background was not removed."
    white = Image.new("RGB", picture.size, (255, 255, 255))
    name = ctx.save(paste_masked(white, picture, mask), parents=[image])
    return f"Removed the background of {image}, keeping the {subject} on white: {name}"


@tool(card="InstructPix2Pix")
def instruct_pix2pix(
    ctx: ToolContext,
    image: Picture,
    instruction: Annotated[str, "The edit as an instruction in English, for example 'make it winter'"],
    seed: Seed = None,
) -> str:
    """Edit a whole image by an instruction (change the style, season, weather, colours ...). Use it when
    the user asks to change how an image looks without naming one object to remove or replace."""
    picture = ctx.open(image)
    size = fit_size(picture.size, int(ctx.options.get("resolution", 512)))
    seed = ctx.new_seed(seed)
    with ctx.model() as pix2pix:
        result = pix2pix.edit(picture.resize(size, Image.Resampling.LANCZOS), instruction,
                              int(ctx.options.get("num_inference_steps", 20)), float(ctx.options.get("guidance_scale", 7.5)),
                              float(ctx.options.get("image_guidance_scale", 1.2)), seed, step_reporter(ctx))  # fmt: skip
    name = ctx.save(result.resize(picture.size, Image.Resampling.LANCZOS), parents=[image], seed=seed)
    return f"Edited {image} following '{instruction}' (seed {seed}): {name}"


# -- outpainting ---------------------------------------------------------------------------------
def _describe(ctx: ToolContext, picture: Image.Image) -> str:
    """A prompt for the canvas's new border: the caption and what the background is."""
    with ctx.model("ImageCaptioning") as blip:
        caption = blip.caption(picture)
    with ctx.model("VisualQuestionAnswering") as vqa:
        background = vqa.answer(picture, BACKGROUND_QUESTION)
    return ", ".join(
        p for p in (caption or "a photo", f"{background} in the background" if background else "") if p
    )


def _target(requested: int, current: int) -> int:
    """The requested side as a multiple of 64, at most MAX_SIDE, never smaller than the current side."""
    return max(current, min(MAX_SIDE, round(requested / 64) * 64))


@tool(card="InfinityOutPainting")
def outpainting(
    ctx: ToolContext,
    image: Picture,
    width: Annotated[int, "The new width in pixels (rounded to a multiple of 64)"],
    height: Annotated[int, "The new height in pixels (rounded to a multiple of 64)"],
    seed: Seed = None,
) -> str:
    """Extend an image beyond its borders to a larger size, painting what plausibly lies around it. Use
    it when the user asks to enlarge, expand, zoom out or outpaint a picture."""
    canvas = ctx.open(image)
    target = (_target(width, canvas.width), _target(height, canvas.height))
    if target == canvas.size:
        raise ToolError(f"outpainting only enlarges: {image} is {canvas.width}×{canvas.height}, so ask for a larger "
                        f"width or height (up to {MAX_SIDE}).")  # fmt: skip
    step_pixels = max(64, int(ctx.options.get("step_pixels", 128)))
    total = max(math.ceil((t - c) / step_pixels) for t, c in zip(target, canvas.size))
    seed = ctx.new_seed(seed)
    for step in range(1, total + 1):
        size = (min(target[0], canvas.width + step_pixels), min(target[1], canvas.height + step_pixels))
        ctx.progress(f"outpainting step {step}/{total}: {size[0]}×{size[1]}", step, total)
        prompt = _describe(ctx, canvas)
        bigger, border = extend_canvas(canvas, size)
        canvas = _inpaint(ctx, bigger, border, prompt, seed + step - 1)
    name = ctx.save(canvas, parents=[image], seed=seed)
    return f"Extended {image} to {canvas.width}×{canvas.height} in {total} step(s) (seed {seed}): {name}"


TOOLS = [text2box, segment_anything, segment_object, remove_object, replace_object, remove_background,
         instruct_pix2pix, outpainting]  # fmt: skip
