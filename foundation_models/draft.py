"""Draft text-to-image: a few steps with a latent-consistency LoRA (LCM-LoRA) on the shared SD1.5 base.

The ``Text2ImageDraft`` card draws in 4 steps with ``LCMScheduler`` at guidance 1 (no unconditional half) what
Text2Image draws in 20: several times faster, rougher in detail. The LoRA never touches the shared UNet that
Text2Image, the ControlNets and the editors use: the draft pipeline's UNet is a *twin*, a second module tree over
the same parameter objects (nothing copied; a move or layout change of the shared UNet moves them for the twin
too), and the LoRA layers are put into the twin only. What this card owns is the LoRA's matrices. Its graphs and
compiled blocks are the twin's own (the fast path keys them by module and by the blocks' structure), so the
default images are the same whether a draft ran or not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .family import Family, FastFacts, Files
from .stable_diffusion import SD15_FAST, Text2Image, _quiet, load_scheduler

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"  # the diffusers layout: unet.<module>.lora_A/lora_B weights
ADAPTER = "draft"
# What the fast path keeps on a module (its graphs, its owner, a patched forward): the twin starts without them.
FAST_PATH_ATTRIBUTES = ("_visual_orchestrator_graphs", "_visual_orchestrator_owner", "forward")


def twin(module: Any) -> Any:
    """A second module tree over the same parameter and buffer objects as ``module``. Layers put into the twin
    (or taken out) are not put into ``module``; ``module.to(...)`` swaps the tensors inside the shared
    parameters, so the twin follows every move. Other attributes (configs, attention processors) are shared."""
    import torch

    own = set(torch.nn.Module().__dict__)  # torch's bookkeeping: parameters, buffers, submodules, hooks
    clone = object.__new__(type(module))
    for key, value in module.__dict__.items():
        if key not in FAST_PATH_ATTRIBUTES:
            clone.__dict__[key] = value.copy() if key in own and hasattr(value, "copy") else value
    clone.__dict__["_modules"] = {name: None if child is None else twin(child)
                                  for name, child in module._modules.items()}  # fmt: skip
    return clone


class LoraWeights:
    """The LoRA matrices of a twin: what the draft card owns, and all that its ``to`` moves."""

    def __init__(self, unet: Any):
        self.params = [p for name, p in unet.named_parameters() if ".lora_" in name]

    def to(self, device: str) -> None:
        for param in self.params:
            param.data = param.data.to(device)

    @property
    def mb(self) -> float:
        return sum(p.numel() * p.element_size() for p in self.params) / 2**20


def lora_twin(unet: Any, folder: Path) -> Any:
    """The shared UNet's twin with the LoRA in ``folder`` loaded into it, in the UNet's dtype, the way diffusers'
    ``load_lora_weights`` loads a LoRA's UNet part (its ``lora_state_dict`` and ``load_lora_into_unet``)."""
    from diffusers import StableDiffusionPipeline

    state_dict, alphas, metadata = StableDiffusionPipeline.lora_state_dict(
        str(folder), weight_name=LORA_FILE, return_lora_metadata=True
    )
    other = sorted({key.split(".", 1)[0] for key in state_dict if not key.startswith("unet.")})
    if other:  # a text-encoder LoRA would change the text encoder every SD1.5 tool shares
        raise ValueError(f"the draft LoRA in {folder} also holds {', '.join(other)} weights; it may hold UNet "
                         "weights only, since the other networks are shared with Text2Image.")  # fmt: skip
    model = twin(unet)
    StableDiffusionPipeline.load_lora_into_unet(
        state_dict, alphas, unet=model, adapter_name=ADAPTER, metadata=metadata
    )
    dtype = next(unet.parameters()).dtype
    for param in LoraWeights(model).params:  # peft keeps adapters in float32 over half-precision layers
        param.data = param.data.to(dtype)
    return model


class Draft(Text2Image):
    """Text2Image's ``generate`` on the LoRA twin with LCMScheduler (the card's steps and guidance)."""


def load(ctx: Any) -> Draft:
    """The draft pipeline: the shared VAE, text encoder and tokenizer, the shared UNet's LoRA twin."""
    from diffusers import StableDiffusionPipeline

    if ctx.options.get("int8_weights") or ctx.options.get("fp8"):  # the Orchestrator refuses it first (lora)
        raise ValueError(f"{ctx.card.name}: the draft LoRA needs the shared UNet's float layers")
    base = ctx.group_checkpoint("sd15_base")
    parts = {n: ctx.component("sd15_base", n) for n in ("vae", "text_encoder", "tokenizer")}
    unet = lora_twin(ctx.component("sd15_base", "unet"), ctx.checkpoint("lora", [LORA_FILE]))
    pipe = StableDiffusionPipeline(unet=unet, **parts, scheduler=load_scheduler(base, ctx.options.get("scheduler")),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    own = {"lora": LoraWeights(unet)}
    log.info("draft LoRA: %.0f MB beside the shared UNet", own["lora"].mb)
    return Draft(_quiet(pipe), own, ctx.fastpath, ctx.options)


# The downloader fetches the one LoRA file (the shared base comes with its group, as for Text2Image).
DRAFT_FAST = FastFacts(
    graphed=SD15_FAST.graphed, compiled=SD15_FAST.compiled, blocks=SD15_FAST.blocks, lora=True
)
FAMILY = Family("draft", load, files=Files("files", by_key={"": LORA_FILE}), fast=DRAFT_FAST)
