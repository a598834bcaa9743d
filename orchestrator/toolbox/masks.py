"""Pixel helpers shared by the editing tools: masks (union, dilation, compositing), boxes and overlays.

A mask is a boolean numpy array of shape (height, width); True marks the object.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128)]  # fmt: skip


def union(masks: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """One mask covering every mask given (all False when none); ``size`` is (width, height)."""
    out = np.zeros((size[1], size[0]), dtype=bool)
    for mask in masks:
        out |= mask.astype(bool)
    return out


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The mask grown by ``pixels`` in every direction (a disc), so an inpainting covers the object's edges."""
    if pixels <= 0 or not mask.any():
        return mask.astype(bool)
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(
        bool
    )


def box_mask(box: Box, size: tuple[int, int]) -> np.ndarray:
    """The box as a mask (pixels whose centre lies inside it); ``size`` is (width, height)."""
    out = np.zeros((size[1], size[0]), dtype=bool)
    x0, y0, x1, y1 = (round(v) for v in box)
    out[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    return out


def mask_image(mask: np.ndarray) -> Image.Image:
    """White where the mask is True, black elsewhere (the format the inpainting tool reads)."""
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def paste_masked(
    original: Image.Image, generated: Image.Image, mask: np.ndarray, feather: int = 0
) -> Image.Image:
    """``generated`` inside the mask, ``original`` outside it, so untouched pixels stay exactly as they were."""
    alpha = mask_image(mask)
    if feather > 0:
        alpha = alpha.filter(ImageFilter.GaussianBlur(feather))
    return Image.composite(generated.convert("RGB").resize(original.size), original.convert("RGB"), alpha)


def overlay(image: Image.Image, masks: Sequence[np.ndarray], opacity: float = 0.55) -> Image.Image:
    """The image with each mask tinted in its own colour (the first mask on top)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    for index in reversed(range(len(masks))):
        color = np.array(PALETTE[index % len(PALETTE)], dtype=np.float32)
        region = masks[index].astype(bool)
        pixels[region] = (1 - opacity) * pixels[region] + opacity * color
    return Image.fromarray(pixels.round().astype(np.uint8))


def draw_boxes(image: Image.Image, boxes: Sequence[tuple[str, float, Box]]) -> Image.Image:
    """A copy of the image with each (label, score, box) drawn as a coloured rectangle and caption."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(1, round(max(out.size) / 256))
    for index, (label, score, box) in enumerate(boxes):
        color = PALETTE[index % len(PALETTE)]
        draw.rectangle([round(v) for v in box], outline=color, width=width)
        text = f"{label} {score:.2f}"
        x, y = box[0], max(0.0, box[1] - 11)
        draw.rectangle(draw.textbbox((x, y), text), fill=color)
        draw.text((x, y), text, fill=(0, 0, 0))
    return out


def box_text(box: Box) -> str:
    return "(" + ", ".join(str(round(v)) for v in box) + ")"


def fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """A working size for diffusion: at most ``max_side`` on the long side, both sides multiples of 64."""
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return (max(64, round(width * scale / 64) * 64), max(64, round(height * scale / 64) * 64))


def extend_canvas(image: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """The image centred on a larger canvas, and the mask of the new border (True where to paint)."""
    canvas = Image.new("RGB", size, (255, 255, 255))
    x, y = (size[0] - image.width) // 2, (size[1] - image.height) // 2
    canvas.paste(image, (x, y))
    border = np.ones((size[1], size[0]), dtype=bool)
    border[y : y + image.height, x : x + image.width] = False
    return canvas, border
