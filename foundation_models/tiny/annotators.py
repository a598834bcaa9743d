"""The lllyasviel/Annotators files that controlnet_aux's HED, MLSD and OpenPose (body) detectors read.

controlnet_aux's architectures are fixed, so these are full-size networks with seeded random
weights. The large ones are stored as fp16 state dicts (`load_state_dict` casts back to fp32).
Hand and face OpenPose files are not written: build the detector as
`OpenposeDetector(Body(path), None, None)` and keep include_hand / include_face off.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._common import seeded

if TYPE_CHECKING:
    import torch

ANNOTATORS = "lllyasviel/Annotators"
HED_FILE = "ControlNetHED.pth"  # HED, also used for scribbles
MLSD_FILE = "mlsd_large_512_fp32.pth"
BODY_POSE_FILE = "body_pose_model.pth"


def _as_fp16(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.half() if t.is_floating_point() else t for name, t in state_dict.items()}


def _hed_state_dict() -> dict[str, torch.Tensor]:
    from controlnet_aux.hed import ControlNetHED_Apache2

    with seeded(f"{ANNOTATORS}/{HED_FILE}"):
        return _as_fp16(ControlNetHED_Apache2().state_dict())


def _mlsd_state_dict() -> dict[str, torch.Tensor]:
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

    with seeded(f"{ANNOTATORS}/{MLSD_FILE}"):
        return MobileV2_MLSD_Large().state_dict()


def _body_pose_state_dict() -> dict[str, torch.Tensor]:
    """OpenPose body weights keyed as the original file: `Body` looks keys up without their first component."""
    from controlnet_aux.open_pose.model import bodypose_model

    with seeded(f"{ANNOTATORS}/{BODY_POSE_FILE}"):
        state_dict = bodypose_model().state_dict()
    return _as_fp16({name.split(".", 1)[1]: t for name, t in state_dict.items()})


def build_annotators(dest: Path) -> None:
    """lllyasviel/Annotators: ControlNetHED.pth, mlsd_large_512_fp32.pth and body_pose_model.pth."""
    import torch

    torch.save(_hed_state_dict(), dest / HED_FILE)
    torch.save(_mlsd_state_dict(), dest / MLSD_FILE)
    torch.save(_body_pose_state_dict(), dest / BODY_POSE_FILE)
