"""Segment Anything (transformers ``SamModel``): masks from boxes, and every segment from a grid of points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .family import Family, Files

Box = tuple[float, float, float, float]


class Sam:
    def __init__(self, model: Any, processor: Any, options: dict[str, Any]):
        self.model = model
        self.processor = processor
        self.points_per_side = int(options.get("points_per_side", 16))
        self.pred_iou_thresh = float(options.get("pred_iou_thresh", 0.88))
        self.stability_score_thresh = float(options.get("stability_score_thresh", 0.95))

    def to(self, device: str) -> None:
        self.model.to(device)

    def masks_from_boxes(self, image: Any, boxes: Sequence[Box]) -> list[Any]:
        """One boolean H×W mask (numpy) per box: of SAM's three candidates, the one with the best IoU score."""
        import torch

        if not boxes:
            return []
        inputs = self.processor(
            images=image, input_boxes=[[list(map(float, b)) for b in boxes]], return_tensors="pt"
        )
        inputs = inputs.to(self.model.device, self.model.dtype)  # casts pixels and boxes, not the sizes
        with torch.inference_mode():
            outputs = self.model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                                 multimask_output=True)  # fmt: skip
        masks = self.processor.post_process_masks(
            outputs.pred_masks.float().cpu(),
            inputs["original_sizes"].cpu(),
            inputs["reshaped_input_sizes"].cpu(),
        )[0]  # (boxes, 3, H, W) bool
        best = outputs.iou_scores[0].float().argmax(dim=-1).cpu()  # (boxes,)
        return [masks[i, best[i]].numpy() for i in range(len(boxes))]

    def segment_everything(self, image: Any) -> list[Any]:
        """Every segment SAM finds from a points grid, largest first; may be empty (then nothing stood out)."""
        from transformers import pipeline

        generator = pipeline("mask-generation", model=self.model, image_processor=self.processor.image_processor,
                             device=self.model.device)  # fmt: skip
        result = generator(image, points_per_crop=self.points_per_side, points_per_batch=64,
                           pred_iou_thresh=self.pred_iou_thresh, stability_score_thresh=self.stability_score_thresh)  # fmt: skip
        masks = [_numpy(m).astype(bool) for m in result["masks"]]
        return sorted((m for m in masks if m.any()), key=lambda m: -int(m.sum()))


def _numpy(mask: Any) -> Any:
    import numpy as np

    return mask.cpu().numpy() if hasattr(mask, "cpu") else np.asarray(mask)


def load(ctx: Any) -> Sam:
    from transformers import SamModel, SamProcessor

    path = ctx.checkpoint("model")
    model = SamModel.from_pretrained(path, dtype=ctx.dtype).to(ctx.device).eval()
    return Sam(model, SamProcessor.from_pretrained(path), dict(ctx.options))


FAMILY = Family("sam", load, files=Files("transformers"))
