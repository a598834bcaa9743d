"""Canny, M-LSD lines, HED soft edges, scribbles and OpenPose: a photo in, its ControlNet's condition out.

Every detector returns exactly the image its ControlNet (lllyasviel/sd-controlnet-*) was trained on: RGB,
the input's size, white edges or lines on black (canny, mlsd, scribble), grey soft edges on black (hed),
coloured limbs on black (openpose). ``detect_resolution`` (an option; tiny weights set 64) is the short
side the network sees; without it the network sees the input at its own size. The networks are
controlnet_aux's, with the weights of lllyasviel/Annotators; Canny is OpenCV and needs no weights.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from .family import Family, Files

HED_FILE = "ControlNetHED.pth"
MLSD_FILE = "mlsd_large_512_fp32.pth"
BODY_POSE_FILE = "body_pose_model.pth"


def aux(module: str) -> ModuleType:
    """A controlnet_aux module. Its package imports every detector it has, and some warn about optional
    packages (mediapipe) or deprecated timm paths on import; that noise is not ours to show."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"controlnet_aux.{module}")


# -- sizes ----------------------------------------------------------------------------------------
def detection_input(image: Image.Image, resolution: int | None = None) -> np.ndarray:
    """The image as a network sees it: RGB uint8, short side ``resolution`` (default: its own), sides multiples of 64."""
    import cv2  # OpenCV loads on the first detection, not when the family is read

    width, height = image.size
    scale = (resolution or min(width, height)) / min(width, height)
    size = (max(64, int(width * scale / 64 + 0.5) * 64), max(64, int(height * scale / 64 + 0.5) * 64))
    array = np.asarray(image.convert("RGB"))
    if size == (width, height):
        return array
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def to_condition(detected: np.ndarray, size: tuple[int, int], binary: bool = False) -> Image.Image:
    """A detector's map as an RGB image of ``size`` (binary maps stay pure black and white)."""
    import cv2  # OpenCV loads on the first detection, not when the family is read

    if detected.shape[1::-1] != tuple(size):
        detected = cv2.resize(detected, size, interpolation=cv2.INTER_NEAREST if binary else cv2.INTER_LINEAR)
    if detected.ndim == 2:
        detected = np.repeat(detected[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(detected, dtype=np.uint8), "RGB")


def scribble_from_edges(edges: np.ndarray) -> np.ndarray:
    """ControlNet's fake scribble: thin a soft edge map (NMS), blur, and keep every touched pixel, white on black."""
    import cv2  # OpenCV loads on the first detection, not when the family is read

    scribble = cv2.GaussianBlur(aux("util").nms(edges, 127, 3.0), (0, 0), 3.0)
    return np.where(scribble > 4, 255, 0).astype(np.uint8)


# -- detectors ------------------------------------------------------------------------------------
@dataclass
class Canny:
    low_threshold: int = 100
    high_threshold: int = 200
    resolution: int | None = None

    def to(self, device: str) -> None:  # no weights
        pass

    def __call__(self, image: Image.Image) -> Image.Image:
        import cv2  # OpenCV loads on the first detection, not when the family is read

        edges = cv2.Canny(detection_input(image, self.resolution), self.low_threshold, self.high_threshold)
        return to_condition(edges, image.size, binary=True)


@dataclass
class SoftEdges:
    """HED soft edges, or scribbles made from them. The HED net is the shared ``hed_annotator`` component."""

    hed: Any  # controlnet_aux HEDdetector, moved by the manager (not by this card)
    scribble: bool = False
    resolution: int | None = None

    def to(self, device: str) -> None:  # owns no weights of its own
        pass

    def __call__(self, image: Image.Image) -> Image.Image:
        import cv2  # OpenCV loads on the first detection, not when the family is read

        array = detection_input(image, self.resolution)
        side = min(array.shape[:2])  # already sized: HEDdetector's own resizing leaves it as is
        edges = self.hed(array, detect_resolution=side, image_resolution=side, output_type="np")[:, :, 0]
        edges = cv2.resize(edges, image.size, interpolation=cv2.INTER_LINEAR)
        if self.scribble:
            return to_condition(scribble_from_edges(edges), image.size, binary=True)
        return to_condition(edges, image.size)


@dataclass
class Lines:
    """M-LSD straight line segments, drawn 1 px wide at the input's size."""

    model: Any  # controlnet_aux MobileV2_MLSD_Large
    value_threshold: float = 0.1
    distance_threshold: float = 0.1
    resolution: int | None = None

    def to(self, device: str) -> None:
        self.model.to(device)

    def __call__(self, image: Image.Image) -> Image.Image:
        import cv2  # OpenCV loads on the first detection, not when the family is read

        array = detection_input(image, self.resolution)
        segments = line_segments(self.model, array, self.value_threshold, self.distance_threshold)
        width, height = image.size
        scale = np.array([width / array.shape[1], height / array.shape[0]] * 2)
        canvas = np.zeros((height, width), dtype=np.uint8)
        for x0, y0, x1, y1 in np.rint(segments * scale).astype(int):
            cv2.line(canvas, (x0, y0), (x1, y1), 255, 1)
        return to_condition(canvas, image.size, binary=True)


def line_segments(
    model: Any, array: np.ndarray, value_threshold: float, distance_threshold: float
) -> np.ndarray:
    """(n, 4) segments x0, y0, x1, y1 in ``array`` pixels; controlnet_aux's ``pred_lines``, empty when none."""
    import torch

    height, width = array.shape[:2]
    batch = (
        np.concatenate([array, np.ones((height, width, 1))], axis=2).transpose(2, 0, 1)[None] / 127.5 - 1.0
    )
    parameter = next(model.parameters())
    with torch.inference_mode():
        output = model(torch.from_numpy(batch).to(parameter.device, parameter.dtype))
    centers, scores, displacement = aux("mlsd.utils").deccode_output_score_and_ptss(output.float(), 200, 3)
    ys, xs = centers[:, 0], centers[:, 1]
    offsets = displacement[ys, xs]  # start dx, dy, end dx, dy (in the half-size output map)
    lengths = np.hypot(offsets[:, 0] - offsets[:, 2], offsets[:, 1] - offsets[:, 3])
    keep = (scores > value_threshold) & (lengths > distance_threshold)
    return 2.0 * (np.stack([xs, ys, xs, ys], axis=1)[keep] + offsets[keep])


@dataclass
class Pose:
    """OpenPose body keypoints (no hands, no face), drawn at the input's size."""

    body: Any  # controlnet_aux open_pose Body
    resolution: int | None = None

    def to(self, device: str) -> None:
        self.body.to(device)

    def __call__(self, image: Image.Image) -> Image.Image:
        open_pose = aux("open_pose")
        detector = open_pose.OpenposeDetector(self.body, None, None)  # body only: no hand or face nets
        poses = detector.detect_poses(detection_input(image, self.resolution))
        width, height = image.size  # keypoints are relative, so they are drawn straight at the output size
        canvas = open_pose.draw_poses(poses, height, width, draw_body=True, draw_hand=False, draw_face=False)
        return to_condition(canvas, image.size)


# -- loading --------------------------------------------------------------------------------------
def load_component(ctx: Any, group: Any, component: str) -> Any:
    """The ``hed_annotator`` group's HED net (shared by the HED and scribble cards) on ``ctx.device``."""
    if component != "hed":
        raise KeyError(f"group {group.name} has no component {component!r} in the detectors family")
    path = ctx.group_checkpoint(group.name, files=[HED_FILE])
    return aux("hed").HEDdetector.from_pretrained(str(path), filename=HED_FILE).to(ctx.device)


def load(ctx: Any) -> Canny | SoftEdges | Lines | Pose:
    options = ctx.options
    kind = options.get("detector")
    resolution = options.get("detect_resolution")
    if kind == "canny":
        return Canny(
            int(options.get("low_threshold", 100)), int(options.get("high_threshold", 200)), resolution
        )
    if kind in ("hed", "scribble"):
        return SoftEdges(ctx.component("hed_annotator", "hed"), kind == "scribble", resolution)
    if kind == "mlsd":
        return Lines(_load_mlsd(ctx), float(options.get("value_threshold", 0.1)),
                     float(options.get("distance_threshold", 0.1)), resolution)  # fmt: skip
    if kind == "openpose":
        path = ctx.checkpoint("annotators", files=[BODY_POSE_FILE]) / BODY_POSE_FILE
        body = aux("open_pose").Body(str(path))
        return Pose(body.to(ctx.device), resolution)
    raise ValueError(
        f"card {ctx.card.name}: unknown detector {kind!r}; use canny, mlsd, hed, scribble or openpose"
    )


def _load_mlsd(ctx: Any) -> Any:
    import torch

    path = ctx.checkpoint("annotators", files=[MLSD_FILE]) / MLSD_FILE
    model = aux("mlsd.models.mbv2_mlsd_large").MobileV2_MLSD_Large()
    model.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
    return model.to(ctx.device).eval()


FAMILY = Family(
    "detectors",
    load,
    load_component,
    # the Annotators files each detector reads, by the card's ``detector`` option (and the HED group's component)
    files=Files(
        "files", {"hed": HED_FILE, "scribble": HED_FILE, "mlsd": MLSD_FILE, "openpose": BODY_POSE_FILE}
    ),
)
