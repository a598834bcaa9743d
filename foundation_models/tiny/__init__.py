"""Deterministic, seeded, tiny checkpoints with the same on-disk layout as the real hub repositories.

Tests and CI load them through the normal `from_pretrained` code instead of downloading real weights;
their outputs are noise. Importing this package is cheap: torch, diffusers, transformers and
controlnet_aux are imported inside the builders.

    build_tiny_checkpoint("stable-diffusion-v1-5/stable-diffusion-v1-5", Path("ckpt/sd15"))
    StableDiffusionPipeline.from_pretrained("ckpt/sd15")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .annotators import ANNOTATORS, build_annotators
from .blip import BLIP_CAPTIONING, BLIP_VQA, build_blip_captioning, build_blip_vqa
from .controlnet import CONTROLNET_REPOS, controlnet_builder
from .dpt import DPT_HYBRID_MIDAS, build_dpt_hybrid_midas
from .grounding_dino import GROUNDING_DINO_TINY, build_grounding_dino_tiny
from .lora import LCM_LORA_SD15, build_lcm_lora_sd15
from .sam import SAM_VIT_BASE, build_sam_vit_base
from .stable_diffusion import (
    INSTRUCT_PIX2PIX,
    SD15_BASE,
    SD15_INPAINTING,
    build_instruct_pix2pix,
    build_sd15_base,
    build_sd15_inpainting,
)
from .text_embedding import TEXT_EMBEDDING_REPOS, text_embedding_builder
from .upernet import UPERNET_CONVNEXT_SMALL, build_upernet_convnext_small

__all__ = ["TINY_BUILDERS", "build_tiny_checkpoint"]

TINY_BUILDERS: dict[str, Callable[[Path], None]] = {
    SD15_BASE: build_sd15_base,
    SD15_INPAINTING: build_sd15_inpainting,
    INSTRUCT_PIX2PIX: build_instruct_pix2pix,
    LCM_LORA_SD15: build_lcm_lora_sd15,
    **{repo_id: controlnet_builder(repo_id) for repo_id in CONTROLNET_REPOS},
    BLIP_CAPTIONING: build_blip_captioning,
    BLIP_VQA: build_blip_vqa,
    DPT_HYBRID_MIDAS: build_dpt_hybrid_midas,
    UPERNET_CONVNEXT_SMALL: build_upernet_convnext_small,
    GROUNDING_DINO_TINY: build_grounding_dino_tiny,
    SAM_VIT_BASE: build_sam_vit_base,
    ANNOTATORS: build_annotators,
    **{repo_id: text_embedding_builder(repo_id) for repo_id in TEXT_EMBEDDING_REPOS},
}


def build_tiny_checkpoint(repo_id: str, dest: Path) -> None:
    """Write the tiny checkpoint of hub repository `repo_id` into the folder `dest` (created if missing)."""
    builder = TINY_BUILDERS.get(repo_id)
    if builder is None:
        known = ", ".join(sorted(TINY_BUILDERS))
        raise ValueError(f"No tiny checkpoint for {repo_id!r}; known repositories: {known}.")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    builder(dest)
