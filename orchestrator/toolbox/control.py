"""ControlNet tools: draw a new picture that follows a map (edges, lines, pose, depth ...) and a prompt.

The map is the output of the matching detector tool (toolbox/detection.py), not a photo; every
description says which detector makes it, so the model runs that detector first on a photo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from PIL import Image

from foundation_models.stable_diffusion import Picture

from ..errors import ToolError
from ..tools import ImageName, ToolContext, tool
from .generation import Prompt, Seed, diffusion_settings, sd_prompts, snap64, step_reporter

MAX_GREY_CHROMA = 16.0  # mean (max - min channel) above which an image is a colour picture, not a grey map


@dataclass(frozen=True)
class Condition:
    what: str  # how the observation names the map
    detector: str  # the tool that makes it from a photo
    grey: bool = True  # a grey map: a colour picture given instead is refused
    nearest: bool = False  # resize without blending (segmentation colours must stay exact)
    prepare: Callable[[Image.Image], Image.Image] | None = None  # turns an accepted input into the map


def as_scribble(image: Image.Image) -> Image.Image:
    """White strokes on black, as sd-controlnet-scribble wants; a drawing of dark strokes on a light
    background (a user's sketch) is inverted as ControlNet's scribble demo does."""
    darkest = np.asarray(image.convert("RGB")).min(axis=2)
    if darkest.mean() <= 127:
        return image
    strokes = np.where(darkest < 127, 255, 0).astype(np.uint8)
    return Image.fromarray(np.repeat(strokes[:, :, None], 3, axis=2), "RGB")


CANNY = Condition("Canny edge map", "image2canny")
LINES = Condition("straight-line map", "image2line")
HED = Condition("HED soft-edge map", "image2hed")
SCRIBBLE = Condition("scribble", "image2scribble", prepare=as_scribble)
POSE = Condition("pose map", "image2pose", grey=False)
SEG = Condition("segmentation map", "image2seg", grey=False, nearest=True)
DEPTH = Condition("depth map", "image2depth")
NORMAL = Condition("normal map", "image2normal", grey=False)


def generation_size(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """The condition's size scaled so its long side is ``resolution``, sides multiples of 64."""
    width, height = size
    scale = resolution / max(width, height)
    return snap64(max(1, round(width * scale)), resolution), snap64(max(1, round(height * scale)), resolution)


def _draw(ctx: ToolContext, image: str, prompt: str, seed: int | None, kind: Condition) -> str:
    picture = ctx.open(image)
    if kind.grey and _chroma(picture) > MAX_GREY_CHROMA:
        raise ToolError(
            f"{image} is a colour picture, not a {kind.what}; run {kind.detector} on it first "
            f"and pass the map it makes to {ctx.tool}."
        )
    if kind.prepare is not None:
        picture = kind.prepare(picture)
    width, height = generation_size(picture.size, int(ctx.options.get("resolution", 512)))
    resample = Image.Resampling.NEAREST if kind.nearest else Image.Resampling.BICUBIC
    condition = picture.resize((width, height), resample) if picture.size != (width, height) else picture
    seed = ctx.new_seed(seed)
    positive, negative = sd_prompts(ctx, prompt)
    settings = diffusion_settings(ctx.options, width, height, steps=20)
    result = ctx.batched(Picture(positive, negative, seed, image=condition), settings, step_reporter(ctx))
    name = ctx.save(result, parents=[image], seed=seed)
    return f"Generated {name} ({width}×{height}, seed {seed}) from the {kind.what} {image} and the prompt: {prompt}"


def _chroma(image: Image.Image) -> float:
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return float((pixels.max(axis=2) - pixels.min(axis=2)).mean())


@tool(card="CannyText2Image")
def canny2image(
    ctx: ToolContext,
    image: Annotated[ImageName, "A Canny edge map made by image2canny"],
    prompt: Prompt,
    seed: Seed = None,
) -> str:
    """Draw a new picture that keeps the outlines of a Canny edge map and follows the prompt. The image
    must be an edge map: to redraw a photo with the same outlines, run image2canny on the photo first and
    pass its result here."""
    return _draw(ctx, image, prompt, seed, CANNY)


@tool(card="LineText2Image")
def line2image(
    ctx: ToolContext,
    image: Annotated[ImageName, "A straight-line map made by image2line"],
    prompt: Prompt,
    seed: Seed = None,
) -> str:
    """Draw a new picture (often a building or a room) that keeps the straight lines of a line map and
    follows the prompt. The image must be a line map: on a photo, run image2line first and pass its
    result here."""
    return _draw(ctx, image, prompt, seed, LINES)


@tool(card="HedText2Image")
def hed2image(
    ctx: ToolContext,
    image: Annotated[ImageName, "A soft-edge map made by image2hed"],
    prompt: Prompt,
    seed: Seed = None,
) -> str:
    """Draw a new picture that keeps the soft edges of a HED map and follows the prompt (good for
    restyling a photo while keeping its shapes). The image must be a HED map: on a photo, run image2hed
    first and pass its result here."""
    return _draw(ctx, image, prompt, seed, HED)


@tool(card="ScribbleText2Image")
def scribble2image(
    ctx: ToolContext,
    image: Annotated[ImageName, "A scribble or sketch (a drawing, or image2scribble's output)"],
    prompt: Prompt,
    seed: Seed = None,
) -> str:
    """Draw a finished picture from a rough scribble or sketch and the prompt. The image may be the user's
    own drawing (dark strokes on white are fine) or the output of image2scribble; for a photo, run
    image2scribble first and pass its result here."""
    return _draw(ctx, image, prompt, seed, SCRIBBLE)


@tool(card="PoseText2Image")
def pose2image(
    ctx: ToolContext,
    image: Annotated[ImageName, "A pose map made by image2pose"],
    prompt: Prompt,
    seed: Seed = None,
) -> str:
    """Draw a new picture of people standing in the poses of a pose map and following the prompt. The
    image must be a pose map (coloured skeletons on black): on a photo of people, run image2pose first
    and pass its result here."""
    return _draw(ctx, image, prompt, seed, POSE)


@tool(card="SegText2Image")
def seg2image(
    ctx: ToolContext,
    image: Annotated[ImageName, "A segmentation map made by image2seg"],
    prompt: Prompt,
    seed: Seed = None,
) -> str:
    """Draw a new picture with the same layout of regions (sky, buildings, people ...) as a segmentation
    map and following the prompt. The image must be a segmentation map: on a photo, run image2seg first
    and pass its result here."""
    return _draw(ctx, image, prompt, seed, SEG)


@tool(card="DepthText2Image")
def depth2image(
    ctx: ToolContext,
    image: Annotated[ImageName, "A depth map made by image2depth"],
    prompt: Prompt,
    seed: Seed = None,
) -> str:
    """Draw a new picture with the same 3D layout (what is near, what is far) as a depth map and following
    the prompt. The image must be a depth map: on a photo, run image2depth first and pass its result here."""
    return _draw(ctx, image, prompt, seed, DEPTH)


@tool(card="NormalText2Image")
def normal2image(
    ctx: ToolContext,
    image: Annotated[ImageName, "A normal map made by image2normal"],
    prompt: Prompt,
    seed: Seed = None,
) -> str:
    """Draw a new picture with the same surfaces and shading directions as a normal map and following the
    prompt. The image must be a normal map: on a photo, run image2normal first and pass its result here."""
    return _draw(ctx, image, prompt, seed, NORMAL)


TOOLS = [canny2image, line2image, hed2image, scribble2image, pose2image, seg2image, depth2image, normal2image]
