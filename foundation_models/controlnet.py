"""ControlNet for SD1.5: each card loads only its ControlNet; UNet, VAE and text encoder are the shared base."""

from __future__ import annotations

from typing import Any

from .family import Family, Files, Warmup
from .stable_diffusion import (
    CONTROLNET_FAST,
    Picture,
    ProgressFn,
    _Batched,
    _quiet,
    load_scheduler,
    quantize_if_asked,
    weights_variant,
)


class ControlNetText2Image(_Batched):
    def generate(self, condition: Any, prompt: str, negative_prompt: str, steps: int, guidance_scale: float,
                 seed: int, progress: ProgressFn | None = None) -> Any:  # fmt: skip
        """An image following ``condition`` (the detector's map, RGB), at the condition's size."""
        width, height = condition.size
        picture = Picture(prompt, negative_prompt, seed, image=condition)
        return self.generate_batch([picture], width, height, steps, guidance_scale, progress)[0]


def load(ctx: Any) -> ControlNetText2Image:
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    path = ctx.checkpoint("controlnet")
    variant = weights_variant(path, ctx.dtype)
    controlnet = ControlNetModel.from_pretrained(path, torch_dtype=ctx.dtype, variant=variant)
    controlnet = quantize_if_asked(ctx, controlnet.to(ctx.device).eval())
    parts = {n: ctx.component("sd15_base", n) for n in ("unet", "vae", "text_encoder", "tokenizer")}
    pipe = StableDiffusionControlNetPipeline(
        **parts,
        controlnet=controlnet,
        scheduler=load_scheduler(ctx.group_checkpoint("sd15_base"), ctx.options.get("scheduler")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return ControlNetText2Image(_quiet(pipe), {"controlnet": controlnet}, ctx.fastpath, ctx.options)


FAMILY = Family(
    "controlnet", load, files=Files("diffusers"), warmup=Warmup(condition_map=True), fast=CONTROLNET_FAST
)
