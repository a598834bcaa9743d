"""Tiny Intel/dpt-hybrid-midas: DPT with a BiT (ResNet) backbone, as the real hybrid checkpoint.

Hub layout: config.json, model.safetensors, preprocessor_config.json. The input must be exactly
64x64 (the processor resizes without keeping the aspect ratio).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._common import save_quietly, seeded

if TYPE_CHECKING:
    from transformers import DPTConfig

DPT_HYBRID_MIDAS = "Intel/dpt-hybrid-midas"
_IMAGE_SIZE = 64


def _dpt_config() -> DPTConfig:
    from transformers import BitConfig, DPTConfig

    backbone = BitConfig(
        embedding_size=16,
        hidden_sizes=[32, 64, 128],
        depths=[1, 1, 1],
        layer_type="bottleneck",
        global_padding="same",
        embedding_dynamic_padding=True,
        num_groups=4,  # the bottleneck's mid channels are a quarter of hidden_sizes
        out_features=["stage1", "stage2", "stage3"],
    )
    return DPTConfig(
        is_hybrid=True,
        backbone_config=backbone.to_dict(),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=_IMAGE_SIZE,
        patch_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[32, 64, 32, 32],  # the first two are BiT stage1 / stage2 channels
        reassemble_factors=[1, 1, 1, 0.5],
        fusion_hidden_size=32,
        backbone_featmap_shape=[1, 128, 4, 4],
        readout_type="project",
    )


def build_dpt_hybrid_midas(dest: Path) -> None:
    """Intel/dpt-hybrid-midas: DPTForDepthEstimation (hybrid) and its DPTImageProcessor."""
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    with seeded(DPT_HYBRID_MIDAS):
        model = DPTForDepthEstimation(_dpt_config())
    save_quietly(model, dest)
    DPTImageProcessor(
        size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
        keep_aspect_ratio=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(dest)
