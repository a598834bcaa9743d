"""Tiny ControlNets for SD1.5 (lllyasviel/sd-controlnet-*), built from the tiny base UNet.

`ControlNetModel.from_unet` copies the base UNet's encoder and zero-initialises the output
convolutions. Those zeros are then replaced by small seeded noise, so that the condition image does
change the tiny pipeline's output (a zero ControlNet would hide a condition that never arrives).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import seeded
from .stable_diffusion import SD15_BASE, tiny_unet

if TYPE_CHECKING:
    from diffusers import ControlNetModel

CONTROLNET_CONDITIONS = ("canny", "mlsd", "hed", "scribble", "openpose", "seg", "depth", "normal")
CONTROLNET_REPOS = tuple(f"lllyasviel/sd-controlnet-{condition}" for condition in CONTROLNET_CONDITIONS)
_ZERO_CONV_STD = 0.02


def _fill_zero_convolutions(controlnet: ControlNetModel) -> None:
    import torch

    zero_modules = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for module in zero_modules:
            for parameter in module.parameters():
                parameter.normal_(0.0, _ZERO_CONV_STD)


def tiny_controlnet(repo_id: str) -> ControlNetModel:
    """The tiny ControlNet of `repo_id`; its embedding downsamples by 2, the tiny VAE's scale factor."""
    from diffusers import ControlNetModel

    base_unet = tiny_unet(SD15_BASE)
    with seeded(repo_id):
        controlnet = ControlNetModel.from_unet(base_unet, conditioning_embedding_out_channels=(16, 32))
        _fill_zero_convolutions(controlnet)
    return controlnet


def controlnet_builder(repo_id: str) -> Callable[[Path], None]:
    """A builder that writes config.json and diffusion_pytorch_model.safetensors for `repo_id`."""

    def build(dest: Path) -> None:
        tiny_controlnet(repo_id).save_pretrained(dest)

    build.__name__ = f"build_{repo_id.rsplit('-', 1)[-1]}_controlnet"
    return build
