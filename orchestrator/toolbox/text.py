"""Text in images: write given text onto a picture (add_text), or make a logo whose letters diffusion styles
(text_art: glyphs → Canny edges → the canny ControlNet → the letters composited back so they stay legible).

Stable Diffusion 1.5 cannot spell, least of all Chinese, so the letters always come from a font renderer
(foundation_models/text_render.py); docs/text-in-images.md has the fonts, the fallback order and OCR results.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from PIL import Image, ImageColor

from foundation_models.stable_diffusion import Picture
from foundation_models.text_render import Style

from ..errors import ToolError
from ..tools import ImageName, ToolContext, tool
from .control import generation_size
from .generation import Seed, diffusion_settings, sd_prompts, snap64, step_reporter

Position = Literal[
    "center", "top", "bottom", "left", "right", "top-left", "top-right", "bottom-left", "bottom-right"
]
ANCHORS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0), "left": (0.0, 0.5), "right": (1.0, 0.5),
    "top-left": (0.0, 0.0), "top-right": (1.0, 0.0), "bottom-left": (0.0, 1.0), "bottom-right": (1.0, 1.0),
}  # fmt: skip
Text = Annotated[str, "The exact text to write, in its own language and script (never translate it)"]
Font = Annotated[str | None, "A font family such as 'Noto Sans CJK SC' or 'DejaVu Sans' (default: one that has every character)"]  # fmt: skip
MAX_TEXT = 500  # characters: a caption or a title, not a page


def _text(ctx: ToolContext, text: str) -> str:
    text = text.replace("\\n", "\n").strip()
    if not text:
        raise ToolError(f"{ctx.tool} needs some text to write; the argument 'text' is empty.")
    if len(text) > MAX_TEXT:
        raise ToolError(f"{ctx.tool}: the text is {len(text)} characters long; keep it under {MAX_TEXT}.")
    return text


def _colour(ctx: ToolContext, name: str, value: str) -> tuple[int, int, int]:
    try:
        return ImageColor.getrgb(value.strip())[:3]
    except (ValueError, AttributeError):
        raise ToolError(f"{ctx.tool}: '{value}' ({name}) is not a colour; use a name such as 'white' or 'red', "
                        "or a hex code such as '#ffcc00'.") from None  # fmt: skip


def _fraction(ctx: ToolContext, name: str, value: float | None) -> float | None:
    if value is not None and not 0 <= value <= 1:
        raise ToolError(
            f"{ctx.tool}: {name} is a fraction of the picture (0 to 1, 0.5 = the middle), got {value:g}."
        )
    return value


def _style(ctx: ToolContext, position: str, x: float | None, y: float | None, size: int | None, font: str | None,
           color: str, outline_width: int | None, outline_color: str):  # fmt: skip
    if size is not None and size < 1:
        raise ToolError(f"{ctx.tool}: size is the letters' height in pixels (1 or more), got {size}.")
    if outline_width is not None and outline_width < 0:
        raise ToolError(f"{ctx.tool}: outline_width is in pixels (0 for none), got {outline_width}.")
    outline = outline_width if outline_width is not None else max(1, (size or 40) // 16)
    return Style(size, _colour(ctx, "color", color), outline, _colour(ctx, "outline_color", outline_color),
                 (font or "").strip() or None, ANCHORS[position], (_fraction(ctx, "x", x), _fraction(ctx, "y", y)))  # fmt: skip


def _notes(notes: list[str]) -> str:
    return "".join(f" Note: {note}" for note in notes)


@tool(card="TextRendering")
def add_text(
    ctx: ToolContext,
    image: Annotated[ImageName, "The picture to write on"],
    text: Text,
    position: Annotated[Position, "Where the text goes"] = "center",
    x: Annotated[
        float | None, "Centre of the text across the picture, 0 (left) to 1 (right); overrides position"
    ] = None,  # fmt: skip
    y: Annotated[
        float | None, "Centre of the text down the picture, 0 (top) to 1 (bottom); overrides position"
    ] = None,  # fmt: skip
    size: Annotated[int | None, "Letter size in pixels (default: a tenth of the picture's height)"] = None,
    color: Annotated[str, "Colour of the letters: a name or #rrggbb"] = "white",
    outline_width: Annotated[
        int | None, "Width of the outline around the letters in pixels, 0 for none"
    ] = None,
    outline_color: Annotated[str, "Colour of the outline: a name or #rrggbb"] = "black",
    font: Font = None,
) -> str:
    """Write the given text onto a picture, exactly as given, in any language (Chinese too), with a chosen
    position, size, colour, outline and font. Use it whenever the user wants words, a caption, a title or
    quoted text in an image: diffusion tools cannot spell. Text that does not fit is wrapped and shrunk."""
    text = _text(ctx, text)
    style = _style(ctx, position, x, y, size, font, color, outline_width, outline_color)
    picture = ctx.open(image)
    with ctx.model() as renderer:
        drawn = renderer.draw(picture, text, style)
    name = ctx.save(drawn.image, parents=[image])
    return (f"Wrote '{text}' on {image} in {drawn.font}, size {drawn.size}, {len(drawn.lines)} line(s), at "
            f"{_where(drawn.box)}: {name}.{_notes(drawn.notes)}")  # fmt: skip


def _where(box: tuple[int, int, int, int]) -> str:
    return f"({box[0]}, {box[1]})-({box[2]}, {box[3]}) px"


@tool(card="TextArt")
def text_art(
    ctx: ToolContext,
    text: Text,
    prompt: Annotated[
        str, "The look of the letters and background, in English (e.g. 'golden metal letters on dark marble')"
    ],  # fmt: skip
    width: Annotated[int | None, "Width in pixels (multiple of 64)"] = None,
    height: Annotated[int | None, "Height in pixels (multiple of 64)"] = None,
    font: Font = None,
    seed: Seed = None,
) -> str:
    """Make a logo, title or poster lettering whose letters are the given text (any language, Chinese too),
    styled by Stable Diffusion: the letters are rendered with a font, traced as edges for the canny ControlNet,
    and laid back over the result so they stay legible. Use it when the user wants a logo or stylised text;
    to write text on an existing picture use add_text."""
    text = _text(ctx, text)
    size = (
        snap64(width, int(ctx.options.get("width", 768))),
        snap64(height, int(ctx.options.get("height", 384))),
    )
    with ctx.model("TextRendering") as renderer:
        glyphs = renderer.glyph_map(size, text, Style(font=(font or "").strip() or None))
    edges = _edges(ctx, glyphs.image)
    seed = ctx.new_seed(seed)
    art = _stylise(ctx, edges, prompt, seed).resize(size, Image.Resampling.BICUBIC)
    blend = float(ctx.options.get("text_blend", 0.85))
    name = ctx.save(compose_letters(art, glyphs.mask, blend, glyphs.size), seed=seed)
    return (f"Made {name} ({size[0]}×{size[1]}, seed {seed}): '{text}' in {glyphs.font}, size {glyphs.size}, at "
            f"{_where(glyphs.box)}, styled as '{prompt}' by the canny ControlNet, the letters laid over it at "
            f"{blend:.0%} so they stay legible.{_notes(glyphs.notes)}")  # fmt: skip


def _edges(ctx: ToolContext, glyphs: Image.Image) -> Image.Image:
    """The Canny edges of the glyph map at the ControlNet's working size (edges traced after resizing stay thin)."""
    options = ctx.options_of("CannyText2Image")
    working = generation_size(glyphs.size, int(options.get("resolution", 512)))
    ctx.progress("tracing the letters' edges")
    with ctx.model("Image2Canny") as canny:
        return canny(glyphs.resize(working, Image.Resampling.LANCZOS))


def _stylise(ctx: ToolContext, edges: Image.Image, prompt: str, seed: int) -> Image.Image:
    options = ctx.options_of("CannyText2Image")
    positive, negative = sd_prompts(ctx, prompt, options)
    settings = diffusion_settings(options, *edges.size, steps=20)
    item = Picture(positive, negative, seed, image=edges)  # batched with canny2image calls of its size too
    return ctx.batched(item, settings, step_reporter(ctx), card="CannyText2Image")


def compose_letters(art: Image.Image, mask: Image.Image, blend: float, size: int) -> Image.Image:
    """The letters laid over ``art``: filled with a tone of the art's own colour (dark on a light background,
    light on a dark one) at ``blend``, inside a solid contrasting halo a quarter of the letter size wide, so people
    and OCR read them on any result (even the noise of random weights)."""
    import cv2  # the halo is a square dilation: OpenCV's is separable, Pillow's MaxFilter took seconds a logo

    pixels = np.asarray(art.convert("RGB"), dtype=np.float32)
    letters = np.asarray(mask, dtype=np.float32)[:, :, None] / 255
    rim_px = max(1, size // 4) * 2 + 1
    square = cv2.getStructuringElement(cv2.MORPH_RECT, (rim_px, rim_px))
    rim = cv2.dilate(np.asarray(mask.convert("L")), square).astype(np.float32)[:, :, None] / 255 - letters
    inside = letters[:, :, 0] > 0.5
    hue = pixels[inside].mean(axis=0) if inside.any() else np.full(3, 128.0)
    around = pixels[rim[:, :, 0] > 0.5]
    light_background = (around.mean() if around.size else pixels.mean()) > 127
    fill = hue * 0.2 if light_background else 255 - (255 - hue) * 0.2
    edge = np.full(3, 255.0 if light_background else 0.0)
    out = pixels * (1 - rim) + edge * rim
    out = out * (1 - blend * letters) + fill * blend * letters
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


TOOLS = [add_text, text_art]
