"""What every section feeds the tools: a photo-like picture, a mask, prompts, and each tool's arguments."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

PROMPT = "a cat sitting on a sofa, best quality, extremely detailed"
NEGATIVE = "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, worst quality"
INSTRUCTION = "make it winter"
QUESTION = "what is in the picture?"
SEED = 1234

# Cards in the order the per-card pass visits them: detectors first (their maps feed the ControlNets).
CARD_ORDER = [
    "Image2Canny", "Image2Line", "Image2Hed", "Image2Scribble", "Image2Pose", "Image2Seg", "Image2Depth",
    "Image2Normal", "ImageCaptioning", "VisualQuestionAnswering", "Text2Image", "CannyText2Image",
    "LineText2Image", "HedText2Image", "ScribbleText2Image", "PoseText2Image", "SegText2Image",
    "DepthText2Image", "NormalText2Image", "InstructPix2Pix", "Inpainting", "Text2Box", "Segmenting",
    "ObjectSegmenting", "ImageEditing", "BackgroundRemoving", "InfinityOutPainting",
]  # fmt: skip

# ControlNet tool -> the detector tool whose map it takes.
MAP_OF = {
    "canny2image": "image2canny", "line2image": "image2line", "hed2image": "image2hed",
    "scribble2image": "image2scribble", "pose2image": "image2pose", "seg2image": "image2seg",
    "depth2image": "image2depth", "normal2image": "image2normal",
}  # fmt: skip

TEXT_ARGS = {"prompt": "a cat on a sofa", "object": "cat", "replacement": "dog", "question": QUESTION,
             "instruction": INSTRUCTION}  # fmt: skip


def photo(size: int) -> Image.Image:
    """A deterministic picture with shapes and gradients (edges for the detectors, colour for the rest)."""
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([x, y, 1 - x * y], axis=-1)
    disc = (x - 0.4) ** 2 + (y - 0.55) ** 2 < 0.06
    rgb[disc] = [0.9, 0.5, 0.2]
    rgb[int(size * 0.1) : int(size * 0.3), int(size * 0.6) : int(size * 0.9)] = [0.2, 0.3, 0.8]
    noise = np.random.default_rng(0).normal(0, 0.03, rgb.shape)
    return Image.fromarray((np.clip(rgb + noise, 0, 1) * 255).astype(np.uint8))


def edge_map(size: int) -> Image.Image:
    """White edges on black, from ``photo``: what a ControlNet tool gets when its detector is not loaded (a
    run limited with --cards); canny2image refuses a colour picture."""
    grey = np.asarray(photo(size).convert("L"), dtype=np.float32)
    edges = np.hypot(*np.gradient(grey)) > 12
    return Image.fromarray((edges * 255).astype(np.uint8)).convert("RGB")


def uploads(session: Any, size: int) -> dict[str, str]:
    """The photo, the mask and the edge map, uploaded to a session: name by role."""
    return {"photo": session.upload(photo(size)), "mask": session.upload(mask(size)),
            "map": session.upload(edge_map(size))}  # fmt: skip


def mask(size: int) -> Image.Image:
    """White (repaint) in the middle, black (keep) around it."""
    pixels = np.zeros((size, size), np.uint8)
    pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return Image.fromarray(pixels).convert("RGB")


def tool_args(tool: Any, images: dict[str, str], size: int) -> dict[str, Any]:
    """Arguments for one call of ``tool``: required ones only, plus a fixed seed where it takes one.

    ``images`` holds the session's ``photo``, ``mask`` and ``map`` names (``uploads``) and each detector's output
    by tool name; a ControlNet tool takes its detector's output, or the edge map when that detector did not run.
    """
    args: dict[str, Any] = {}
    for param in tool.params:
        if param.name == "seed":
            args["seed"] = SEED
        elif not param.required:
            continue
        elif param.kind == "image":
            if param.name == "mask":
                args[param.name] = images["mask"]
            else:
                fallback = images.get("map", images["photo"]) if tool.name in MAP_OF else images["photo"]
                args[param.name] = images.get(MAP_OF.get(tool.name, ""), fallback)
        elif param.name in ("width", "height"):
            args[param.name] = size + 256 if param.name == "width" else size
        elif param.kind is str:
            args[param.name] = TEXT_ARGS.get(param.name, "a cat")
        else:
            raise ValueError(f"no benchmark value for {tool.name}({param.name})")
    return args
