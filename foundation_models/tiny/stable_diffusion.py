"""Tiny Stable Diffusion 1.5 repositories: text-to-image, inpainting and InstructPix2Pix.

The three share the VAE, the text encoder and the tokenizer byte for byte, as the real repositories
do (each is built from the same seed), so a loader can share them in memory. Only the UNet (4, 9 or 8
input channels) and the scheduler differ. No safety checker is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import save_quietly, seeded, write_json
from ._tokenizers import CLIP_BOS, CLIP_EOS, write_clip_tokenizer

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel
    from transformers import CLIPTextModel

SD15_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD15_INPAINTING = "stable-diffusion-v1-5/stable-diffusion-inpainting"
INSTRUCT_PIX2PIX = "timbrooks/instruct-pix2pix"

_SHARED_SEED_NAME = "sd15-shared"  # seeds the VAE and text encoder of all three repositories
_BETAS = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "trained_betas": None,
}


def tiny_unet(repo_id: str, in_channels: int = 4) -> UNet2DConditionModel:
    """The tiny SD1.5-shaped UNet of `repo_id` (32 px latents, 32-dim cross-attention)."""
    from diffusers import UNet2DConditionModel

    with seeded(f"{repo_id}/unet"):
        return UNet2DConditionModel(
            sample_size=32,
            in_channels=in_channels,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
        )


def _tiny_vae() -> AutoencoderKL:
    from diffusers import AutoencoderKL

    with seeded(f"{_SHARED_SEED_NAME}/vae"):
        return AutoencoderKL(
            sample_size=64,
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
        )


def _tiny_text_encoder(vocab: dict[str, int]) -> CLIPTextModel:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        hidden_act="quick_gelu",
        bos_token_id=vocab[CLIP_BOS],
        eos_token_id=vocab[CLIP_EOS],
        pad_token_id=vocab[CLIP_EOS],
    )
    with seeded(f"{_SHARED_SEED_NAME}/text_encoder"):
        return CLIPTextModel(config)


def _scheduler(class_name: str) -> SchedulerMixin:
    """The scheduler each real repository ships, with SD1.5's training betas."""
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, PNDMScheduler

    if class_name == "PNDMScheduler":
        return PNDMScheduler(**_BETAS, set_alpha_to_one=False, skip_prk_steps=True)
    if class_name == "DDIMScheduler":
        return DDIMScheduler(**_BETAS, clip_sample=False, set_alpha_to_one=False)
    if class_name == "EulerAncestralDiscreteScheduler":
        return EulerAncestralDiscreteScheduler(**_BETAS, prediction_type="epsilon")
    raise ValueError(f"no tiny scheduler for {class_name!r}")


def _model_index(pipeline_class: str, scheduler_class: str) -> dict[str, Any]:
    import diffusers

    return {
        "_class_name": pipeline_class,
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler_class],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def _write_pipeline(
    dest: Path, pipeline_class: str, unet: UNet2DConditionModel, scheduler_class: str
) -> None:
    from transformers import CLIPImageProcessor

    vocab = write_clip_tokenizer(dest / "tokenizer")
    unet.save_pretrained(dest / "unet")
    _tiny_vae().save_pretrained(dest / "vae")
    save_quietly(_tiny_text_encoder(vocab), dest / "text_encoder")
    _scheduler(scheduler_class).save_pretrained(dest / "scheduler")
    CLIPImageProcessor().save_pretrained(dest / "feature_extractor")
    write_json(dest / "model_index.json", _model_index(pipeline_class, scheduler_class))


def build_sd15_base(dest: Path) -> None:
    """stable-diffusion-v1-5/stable-diffusion-v1-5: StableDiffusionPipeline with PNDM."""
    _write_pipeline(dest, "StableDiffusionPipeline", tiny_unet(SD15_BASE), "PNDMScheduler")


def build_sd15_inpainting(dest: Path) -> None:
    """stable-diffusion-v1-5/stable-diffusion-inpainting: 9-channel UNet (latents, mask, masked image), DDIM."""
    unet = tiny_unet(SD15_INPAINTING, in_channels=9)
    _write_pipeline(dest, "StableDiffusionInpaintPipeline", unet, "DDIMScheduler")


def build_instruct_pix2pix(dest: Path) -> None:
    """timbrooks/instruct-pix2pix: 8-channel UNet (latents, image latents), Euler ancestral."""
    unet = tiny_unet(INSTRUCT_PIX2PIX, in_channels=8)
    _write_pipeline(dest, "StableDiffusionInstructPix2PixPipeline", unet, "EulerAncestralDiscreteScheduler")
