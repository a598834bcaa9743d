"""InstructPix2Pix: edit an image by an instruction ("make it winter"), with its own 8-channel UNet.

The VAE, text encoder and tokenizer come from the shared SD1.5 base when this checkpoint's files are
identical to the base's (they are in the real repositories), else from this checkpoint.
"""

from __future__ import annotations

from typing import Any

from .family import Family, Files
from .stable_diffusion import (
    SD15_FAST,
    ProgressFn,
    _Pipeline,
    _quiet,
    load_pipeline_component,
    load_scheduler,
    quantize_if_asked,
    shared_or_own,
)


class InstructPix2Pix(_Pipeline):
    def edit(self, image: Any, instruction: str, steps: int, guidance_scale: float, image_guidance_scale: float,
             seed: int, progress: ProgressFn | None = None) -> Any:  # fmt: skip
        """The image edited as the instruction says, at the input's size (sides a multiple of 8)."""
        return self._run(steps, seed, progress, prompt=instruction, image=image, guidance_scale=guidance_scale,
                         image_guidance_scale=image_guidance_scale)  # fmt: skip


def load(ctx: Any) -> InstructPix2Pix:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    path = ctx.checkpoint("model")
    own = {"unet": quantize_if_asked(ctx, load_pipeline_component(path, "unet", ctx.dtype, ctx.device))}
    parts = {n: shared_or_own(ctx, path, n, own) for n in ("vae", "text_encoder", "tokenizer")}
    pipe = StableDiffusionInstructPix2PixPipeline(
        unet=own["unet"],
        **parts,
        scheduler=load_scheduler(path, ctx.options.get("scheduler")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    own_modules = {k: v for k, v in own.items() if hasattr(v, "to")}
    return InstructPix2Pix(_quiet(pipe), own_modules, ctx.fastpath, ctx.options)


FAMILY = Family("instruct_pix2pix", load, files=Files("pipeline"), fast=SD15_FAST)
