"""Tiny facebook/sam-vit-base: SamModel with a 64 px image encoder and 32 px low-resolution masks.

Hub layout: config.json, model.safetensors, preprocessor_config.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._common import save_quietly, seeded

if TYPE_CHECKING:
    from transformers import SamConfig

SAM_VIT_BASE = "facebook/sam-vit-base"
_IMAGE_SIZE = 64
_PATCH_SIZE = 8
_PROMPT_HIDDEN = 16  # the vision output_channels, prompt and decoder hidden sizes must agree


def _sam_config() -> SamConfig:
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=32,
        output_channels=_PROMPT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=_IMAGE_SIZE,
        patch_size=_PATCH_SIZE,
        window_size=4,
        global_attn_indexes=[1],
        num_pos_feats=_PROMPT_HIDDEN // 2,
        mlp_dim=64,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=_PROMPT_HIDDEN, image_size=_IMAGE_SIZE, patch_size=_PATCH_SIZE, mask_input_channels=4
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=_PROMPT_HIDDEN,
        mlp_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        iou_head_hidden_dim=16,
    )
    return SamConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config=prompt.to_dict(),
        mask_decoder_config=decoder.to_dict(),
    )


def build_sam_vit_base(dest: Path) -> None:
    """facebook/sam-vit-base: SamModel and its SamImageProcessor (SamProcessor loads from it)."""
    from transformers import SamImageProcessor, SamModel

    with seeded(SAM_VIT_BASE):
        model = SamModel(_sam_config())
    save_quietly(model, dest)
    half = _IMAGE_SIZE // 2
    SamImageProcessor(
        size={"longest_edge": _IMAGE_SIZE},
        pad_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
        mask_size={"longest_edge": half},
        mask_pad_size={"height": half, "width": half},
    ).save_pretrained(dest)
