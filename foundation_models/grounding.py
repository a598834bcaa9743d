"""GroundingDINO open-vocabulary detection (transformers ``AutoModelForZeroShotObjectDetection``).

``detect`` turns a text such as "cat, red car" into boxes in image pixels, clipped to the image.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from .family import Family, Files

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


class Detection(NamedTuple):
    label: str
    score: float
    box: Box


def clip_box(box: Box, width: int, height: int) -> Box | None:
    """The box clipped to a ``width`` × ``height`` image, or None when nothing of it is inside."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
    y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
    if x1 - x0 < 1.0 or y1 - y0 < 1.0:
        return None
    return (x0, y0, x1, y1)


def phrases(text: str) -> str:
    """GroundingDINO's prompt format: lower case, each phrase ending with a period ("cat. red car.")."""
    parts = [p.strip() for p in re.split(r"[.,;\n]", text.lower()) if p.strip()]
    return "".join(f"{p}. " for p in parts).strip()


class GroundingDino:
    def __init__(self, model: Any, processor: Any, box_threshold: float = 0.3, text_threshold: float = 0.25):
        self.model = model
        self.processor = processor
        self.box_threshold = box_threshold  # the card's defaults, for callers that give none
        self.text_threshold = text_threshold

    def to(self, device: str) -> None:
        self.model.to(device)

    def detect(self, image: Any, text: str, box_threshold: float | None = None,
               text_threshold: float | None = None) -> list[Detection]:  # fmt: skip
        """Boxes of the things ``text`` names, best first; an empty list when none scores above the thresholds."""
        import torch

        box_threshold = self.box_threshold if box_threshold is None else box_threshold
        text_threshold = self.text_threshold if text_threshold is None else text_threshold

        prompt = phrases(text)
        if not prompt:
            return []
        inputs = self.processor(images=image, text=prompt, return_tensors="pt").to(
            self.model.device, self.model.dtype
        )
        with torch.inference_mode():
            outputs = self.model(**inputs)
        width, height = image.size
        result = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
            target_sizes=[(height, width)],
        )[0]  # fmt: skip
        found = []
        for label, score, box in zip(
            result["text_labels"], result["scores"].tolist(), result["boxes"].tolist()
        ):
            clipped = clip_box(box, width, height)
            if clipped is not None:
                found.append(Detection(self._clean(label) or text.strip(), float(score), clipped))
        return sorted(found, key=lambda d: -d.score)

    def _clean(self, label: str) -> str:
        for token in self.processor.tokenizer.all_special_tokens:
            label = label.replace(token, " ")
        return " ".join(label.split()).strip(" .")


def load(ctx: Any) -> GroundingDino:
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    path = ctx.checkpoint("model")
    model = AutoModelForZeroShotObjectDetection.from_pretrained(path, dtype=ctx.dtype).to(ctx.device).eval()
    thresholds = {k: float(ctx.options[k]) for k in ("box_threshold", "text_threshold") if k in ctx.options}
    return GroundingDino(model, AutoProcessor.from_pretrained(path), **thresholds)


FAMILY = Family("grounding", load, files=Files("transformers"))
