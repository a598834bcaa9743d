"""A tiny latent-consistency LoRA for the tiny SD1.5 UNet (latent-consistency/lcm-lora-sdv1-5's layout).

The real LCM-LoRA was trained by diffusers' ``train_lcm_distill_lora_sd_wds.py`` on the layers listed in
``LCM_TARGETS`` at rank 64 (alpha 64); this one has the same layers of the tiny UNet at rank 4, seeded random
matrices, saved in diffusers' LoRA layout (``pytorch_lora_weights.safetensors``, keys ``unet.<module>.lora_A.weight``).
``random_lora`` also makes the full-size one the GPU benchmarks load (benchmarks/weights.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._common import seeded

LCM_LORA_SD15 = "latent-consistency/lcm-lora-sdv1-5"
LORA_FILE = "pytorch_lora_weights.safetensors"
LCM_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
               "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")  # fmt: skip
B_STD = 0.01  # lora_B: small enough that a draft is a slightly different picture, not noise on noise


def random_lora(
    unet: Any, rank: int, seed_name: str, dtype: Any = None, device: str = "cpu"
) -> dict[str, Any]:
    """Seeded random LoRA matrices for ``unet``'s ``LCM_TARGETS`` layers (the UNet may live on the meta device:
    only its layer shapes are read), keyed as peft names them."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LCM_TARGETS)))
    shapes = {key: tuple(value.shape) for key, value in get_peft_model_state_dict(unet).items()}
    out = {}
    with seeded(seed_name):
        for key in sorted(shapes):
            shape = shapes[key]
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            std = fan_in**-0.5 if ".lora_A." in key else B_STD
            out[key] = (torch.randn(shape, device=device) * std).to(dtype or torch.float32)
    return out


def save_lora(layers: dict[str, Any], dest: Path) -> None:
    """Write UNet LoRA matrices as diffusers does (``StableDiffusionPipeline.save_lora_weights``)."""
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.save_lora_weights(dest, unet_lora_layers=layers, weight_name=LORA_FILE,
                                              safe_serialization=True)  # fmt: skip


def build_lcm_lora_sd15(dest: Path) -> None:
    """latent-consistency/lcm-lora-sdv1-5 for the tiny SD1.5 base."""
    from .stable_diffusion import SD15_BASE, tiny_unet

    save_lora(random_lora(tiny_unet(SD15_BASE), rank=4, seed_name=LCM_LORA_SD15), Path(dest))
