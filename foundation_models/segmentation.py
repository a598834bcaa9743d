"""Semantic segmentation (UperNet-ConvNeXt, ADE20K) drawn in the colours sd-controlnet-seg was trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .family import Family, Files

# The ADE20K palette of ControlNet's seg annotator and the sd-controlnet-seg model card (TaskMatrix's
# ``ade_palette``), one colour per class id 0-149. Ids 6 (road) and 48 (skyscraper) share a colour there too.
# fmt: off
ADE20K_PALETTE = np.array([
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
], dtype=np.uint8)
# fmt: on


def colorize(labels: np.ndarray) -> Image.Image:
    """A class-id map (height, width) as an RGB image in the ADE20K palette."""
    return Image.fromarray(ADE20K_PALETTE[np.asarray(labels, dtype=np.int64)], "RGB")


class Segmenter:
    """UperNetForSemanticSegmentation and its image processor; the map comes back at the input's size."""

    def __init__(self, model: Any, processor: Any):
        self.model = model
        self.processor = processor

    def to(self, device: str) -> None:
        self.model.to(device)

    def labels(self, image: Image.Image) -> np.ndarray:
        """The ADE20K class id of every pixel, shape (height, width)."""
        import torch

        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        parameter = next(self.model.parameters())
        with torch.inference_mode():
            logits = self.model(pixel_values=pixels.to(parameter.device, parameter.dtype)).logits
            logits = torch.nn.functional.interpolate(
                logits.float(), size=image.size[::-1], mode="bilinear", align_corners=False
            )
        return logits.argmax(dim=1)[0].cpu().numpy()

    def __call__(self, image: Image.Image) -> Image.Image:
        return colorize(self.labels(image))


def load(ctx: Any) -> Segmenter:
    from transformers import AutoImageProcessor, UperNetForSemanticSegmentation

    path = ctx.checkpoint("model")
    model = UperNetForSemanticSegmentation.from_pretrained(path, dtype=ctx.dtype).to(ctx.device).eval()
    return Segmenter(model, AutoImageProcessor.from_pretrained(path))


FAMILY = Family("segmentation", load, files=Files("transformers"))
