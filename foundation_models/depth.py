"""Depth (DPT-hybrid MiDaS) and the normal map ControlNet derives from it, as condition images.

Both cards use one DPT per device (the ``dpt_depth`` group). The model sees a square image at its own
size (its processor resizes); the prediction is scaled back to the input's size, so every map has the
input's size and aspect ratio. Depth is MiDaS' relative inverse depth: brighter is closer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .family import Family, Files


class DPT:
    """The shared ``dpt_depth`` component: DPTForDepthEstimation and its image processor."""

    def __init__(self, model: Any, processor: Any):
        self.model = model
        self.processor = processor

    def to(self, device: str) -> None:
        self.model.to(device)

    def predict(self, image: Image.Image) -> np.ndarray:
        """Relative inverse depth, float32, shape (height, width) of ``image``."""
        import torch

        inputs = self.processor(images=image.convert("RGB"), keep_aspect_ratio=False, return_tensors="pt")
        pixels = inputs["pixel_values"]  # square: DPT-hybrid wants exactly its image size
        parameter = next(self.model.parameters())
        with torch.inference_mode():
            predicted = self.model(pixel_values=pixels.to(parameter.device, parameter.dtype)).predicted_depth
            resized = torch.nn.functional.interpolate(
                predicted[:, None].float(), size=image.size[::-1], mode="bicubic", align_corners=False
            )
        return resized[0, 0].cpu().numpy()


def depth_image(depth: np.ndarray) -> Image.Image:
    """Depth stretched to 0-255 (near is white), grey RGB: what sd-controlnet-depth expects."""
    gray = (_relative(depth) * 255.0).round().astype(np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")


def normal_image(depth: np.ndarray, background_threshold: float = 0.4) -> Image.Image:
    """Surface normals from depth, as ControlNet's normal annotator: Sobel gradients as x and y, 2π as z.

    Pixels whose relative depth is under ``background_threshold`` are background and face the viewer
    (128, 128, 255). R grows where depth (nearness) grows to the right, G where it grows downwards.
    """
    import cv2  # OpenCV loads on the first detection, not when the family is read

    depth = depth.astype(np.float32)
    x = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    y = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    background = _relative(depth) < background_threshold
    x[background] = 0
    y[background] = 0
    normal = np.stack([x, y, np.full_like(x, 2.0 * np.pi)], axis=2)
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    return Image.fromarray((normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8), "RGB")


def _relative(depth: np.ndarray) -> np.ndarray:
    """Depth scaled to 0..1 (all zeros for a flat map)."""
    low, span = float(depth.min()), float(depth.max() - depth.min())
    if not np.isfinite(span) or span <= 0:
        return np.zeros(depth.shape, dtype=np.float32)
    return ((depth - low) / span).astype(np.float32)


@dataclass
class DepthMap:
    """Image2Depth (``output="depth"``) or Image2Normal (``output="normal"``) on the shared DPT."""

    dpt: DPT  # moved by the manager, not by this card
    output: str = "depth"
    background_threshold: float = 0.4

    def to(self, device: str) -> None:  # owns no weights of its own
        pass

    def __call__(self, image: Image.Image) -> Image.Image:
        depth = self.dpt.predict(image)
        if self.output == "normal":
            return normal_image(depth, self.background_threshold)
        return depth_image(depth)


def load_component(ctx: Any, group: Any, component: str) -> DPT:
    """The ``dpt_depth`` group's DPT on ``ctx.device``."""
    from transformers import AutoImageProcessor, DPTForDepthEstimation

    if component != "dpt":
        raise KeyError(f"group {group.name} has no component {component!r} in the depth family")
    path = ctx.group_checkpoint(group.name)
    model = DPTForDepthEstimation.from_pretrained(path, dtype=ctx.dtype).to(ctx.device).eval()
    return DPT(model, AutoImageProcessor.from_pretrained(path))


def load(ctx: Any) -> DepthMap:
    output = ctx.options.get("output", "depth")
    if output not in ("depth", "normal"):
        raise ValueError(f"card {ctx.card.name}: option 'output' is {output!r}; use depth or normal")
    threshold = float(ctx.options.get("background_threshold", 0.4))
    return DepthMap(ctx.component("dpt_depth", "dpt"), output, threshold)


FAMILY = Family("depth", load, load_component, files=Files("transformers"))
