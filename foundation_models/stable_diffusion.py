"""Stable Diffusion 1.5: the shared base (``sd15_base`` group), text-to-image and inpainting.

The base's UNet, VAE, text encoder and tokenizer are loaded once per device and shared by every pipeline
built on them (``Pipeline(**components)``); each pipeline gets its own scheduler, which holds state. A
card with its own checkpoint (inpainting) reuses a base component only where the files are identical.

Text-to-image, inpainting and the ControlNets (controlnet.py) run several pictures in one pipeline call
(``generate_batch``): diffusers takes a list of prompts, negative prompts, images and generators, and draws each
picture's noise from its own generator, so a picture comes out as it would alone (within float rounding).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .family import Family, FastFacts, Files

if TYPE_CHECKING:
    from .fastpath import FastPath

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin")
ProgressFn = Callable[[int, int], None]
# The SD1.5 networks on the fast path: the denoiser and text encoder replay graphs of their forward; the denoiser
# and the VAE decoder compile their repeated blocks in the background, shared with every SD1.5 pipeline.
SD15_FAST = FastFacts(graphed=("unet", "text_encoder"), compiled=("unet", "vae.decoder"),
                      blocks=("ResnetBlock2D", "Transformer2DModel"), int8=True)  # fmt: skip
CONTROLNET_FAST = FastFacts(graphed=("unet", "controlnet", "text_encoder"), compiled=("unet", "controlnet", "vae.decoder"),
                            blocks=SD15_FAST.blocks, int8=True)  # fmt: skip


# -- components -----------------------------------------------------------------------------------
def load_component(ctx: Any, group: Any, component: str) -> Any:
    """Entry point for the manager: one component of the ``sd15_base`` group on ``ctx.device``."""
    module = load_pipeline_component(ctx.group_checkpoint(group.name), component, ctx.dtype, ctx.device)
    return quantize_if_asked(ctx, module) if component == "unet" else module


def quantize_if_asked(ctx: Any, module: Any) -> Any:
    """The network with int8 weight storage (``--int8-weights``) or fp8 compute (``--fp8``) when the orchestrator
    asks for it (it refuses both at once)."""
    if ctx.options.get("int8_weights"):
        from .int8_weights import quantize_

        quantize_(module)
    elif ctx.options.get("fp8"):
        from .fp8 import quantize_ as fp8_quantize

        fp8_quantize(module)
    return module


def load_pipeline_component(path: Path, name: str, dtype: Any, device: str) -> Any:
    """One component of a diffusers pipeline folder, by the class its ``model_index.json`` names."""
    library, class_name = json.loads((path / "model_index.json").read_text())[name]
    cls = getattr(importlib.import_module(library), class_name)
    if not hasattr(cls, "to"):  # tokenizer, feature extractor, scheduler
        return cls.from_pretrained(path, subfolder=name)
    kwargs: dict[str, Any] = {"subfolder": name, "variant": weights_variant(path / name, dtype)}
    kwargs["torch_dtype" if library == "diffusers" else "dtype"] = dtype
    return cls.from_pretrained(path, **kwargs).to(device).eval()


def load_scheduler(path: Path, scheduler: str | None) -> Any:
    """A fresh scheduler (schedulers hold per-call state, so pipelines never share one)."""
    import diffusers

    base = load_pipeline_component(path, "scheduler", None, "cpu")
    return getattr(diffusers, scheduler).from_config(base.config) if scheduler else base


def _has_variant(folder: Path, variant: str) -> bool:
    return any(f".{variant}." in p.name for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES)


def weights_variant(folder: Path, dtype: Any) -> str | None:
    """``fp16`` where those weights are on disk and wanted (half precision) or the only ones (the downloader
    fetches just the fp16 variant; on CPU they load upcast to float32), else None (the plain files)."""
    if not _has_variant(folder, "fp16"):
        return None
    plain = any(p.name.count(".") == 1 for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES)
    return "fp16" if (dtype is not None and str(dtype).endswith("float16")) or not plain else None


def files_identical(a: Path, b: Path) -> bool:
    """Do two component folders hold the same weight (or vocabulary) files, byte for byte?"""
    names_a = sorted(p.name for p in a.iterdir() if p.is_file() and not p.name.startswith("."))
    names_b = sorted(p.name for p in b.iterdir() if p.is_file() and not p.name.startswith("."))
    return names_a == names_b and all(file_digest(a / n) == file_digest(b / n) for n in names_a)


_DIGESTS: dict[tuple[str, int, float], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file; free for HF-cache files, whose blob is already named by its sha256."""
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and len(real.name) == 64:
        return real.name
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with real.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def shared_or_own(ctx: Any, own_path: Path, name: str, own: dict[str, Any]) -> Any:
    """The base's component when this checkpoint's copy is identical, else this checkpoint's own."""
    base_path = ctx.group_checkpoint("sd15_base")
    if files_identical(base_path / name, own_path / name):
        return ctx.component("sd15_base", name)
    log.info("%s/%s differs from the SD1.5 base; loading its own copy", own_path.name, name)
    own[name] = load_pipeline_component(own_path, name, ctx.dtype, ctx.device)
    return own[name]


# -- running --------------------------------------------------------------------------------------
def generator(seed: int) -> Any:
    import torch

    return torch.Generator("cpu").manual_seed(int(seed))


def step_callback(progress: ProgressFn | None, total: int) -> Callable[..., dict] | None:
    if progress is None:
        return None

    def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        progress(step + 1, total)
        return callback_kwargs

    return on_step_end


@dataclass(frozen=True)
class Picture:
    """One picture of a pipeline call: what may differ between the pictures of a batch."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    image: Any = None  # a ControlNet's condition map; the picture to inpaint
    mask_image: Any = None  # the inpainting mask


class _Pipeline:
    """A diffusers pipeline plus the modules this card owns (moved by ``to``; shared ones are not), run on the
    Orchestrator's fast path as the card's options allow."""

    def __init__(self, pipe: Any, own: dict[str, Any], fastpath: FastPath,
                 options: Mapping[str, Any] | None = None):  # fmt: skip
        self.pipe = pipe
        self.own = own
        self.fastpath = fastpath
        self.fast = fastpath.fast_for(options or {})  # CUDA-graph replay of the denoiser and decoder
        self.compile = fastpath.compile_for(options or {})  # ... of their forward compiled in the background

    @property
    def compile_state(self) -> str:
        """'compiled', 'compiling' or 'eager' (the models panel and ``warmup`` show it)."""
        return self.fastpath.compile_state(self.pipe, self.fast, self.compile)

    def to(self, device: str) -> None:
        self.fastpath.release(self.pipe)  # captured graphs hold the old device addresses
        for module in self.own.values():
            module.to(device)

    def _run(self, steps: int, seed: int, progress: ProgressFn | None, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode(), self.fastpath.pipeline(self.pipe, fast=self.fast, compile=self.compile):
            return self.pipe(
                num_inference_steps=steps,
                generator=generator(seed),
                callback_on_step_end=step_callback(progress, steps),
                **kwargs,
            ).images[0]


class _Batched(_Pipeline):
    """A pipeline that makes several pictures in one call (text-to-image, inpainting, the ControlNets)."""

    def batch_size(self, waiting: int, limit: int) -> int:
        """How many of ``waiting`` pictures one call runs (at most ``limit``): a few sizes where the modules
        capture CUDA graphs (one set per shape), any number elsewhere."""
        graphs = self.fast and self.pipe.device.type == "cuda"
        return self.fastpath.batch_size(waiting, limit, graphs)

    def generate_batch(self, pictures: Sequence[Picture], width: int, height: int, steps: int,
                       guidance_scale: float, progress: ProgressFn | None = None) -> list[Any]:  # fmt: skip
        """One pipeline call for all ``pictures`` (a list of each per-picture input), their images in order; every
        image ``width``×``height`` (a ControlNet's or inpainting's ``image`` is that size already)."""
        import torch

        per_picture: dict[str, list[Any]] = {}
        for name in ("prompt", "negative_prompt", "image", "mask_image"):
            values = [getattr(p, name) for p in pictures]
            if values[0] is not None:  # image and mask: only the pipelines that take them
                per_picture[name] = values
        with torch.inference_mode(), self.fastpath.pipeline(self.pipe, fast=self.fast, compile=self.compile):
            return self.pipe(
                num_inference_steps=steps,
                generator=[generator(p.seed) for p in pictures],
                callback_on_step_end=step_callback(progress, steps),
                width=width,
                height=height,
                guidance_scale=guidance_scale,
                **per_picture,
            ).images


class Text2Image(_Batched):
    def generate(self, prompt: str, negative_prompt: str, width: int, height: int, steps: int,
                 guidance_scale: float, seed: int, progress: ProgressFn | None = None) -> Any:  # fmt: skip
        return self.generate_batch([Picture(prompt, negative_prompt, seed)], width, height, steps, guidance_scale,
                                   progress)[0]  # fmt: skip


class Inpainting(_Batched):
    def inpaint(self, image: Any, mask: Any, prompt: str, negative_prompt: str, steps: int,
                guidance_scale: float, seed: int, progress: ProgressFn | None = None) -> Any:  # fmt: skip
        """``image`` repainted where ``mask`` is white (a batch's pictures carry both)."""
        width, height = image.size
        picture = Picture(prompt, negative_prompt, seed, image=image, mask_image=mask)
        return self.generate_batch([picture], width, height, steps, guidance_scale, progress)[0]


def load(ctx: Any) -> _Batched:
    """Text2Image (the base alone) or Inpainting (its own 9-channel UNet on the base's components)."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    base = ctx.group_checkpoint("sd15_base")
    scheduler_name = ctx.options.get("scheduler")
    common = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if "inpainting" not in ctx.card.checkpoints:
        parts = {n: ctx.component("sd15_base", n) for n in ("unet", "vae", "text_encoder", "tokenizer")}
        pipe = StableDiffusionPipeline(**parts, scheduler=load_scheduler(base, scheduler_name), **common)
        return Text2Image(_quiet(pipe), {}, ctx.fastpath, ctx.options)
    path = ctx.checkpoint("inpainting")
    own = {"unet": quantize_if_asked(ctx, load_pipeline_component(path, "unet", ctx.dtype, ctx.device))}
    parts = {n: shared_or_own(ctx, path, n, own) for n in ("vae", "text_encoder", "tokenizer")}
    pipe = StableDiffusionInpaintPipeline(
        unet=own["unet"], **parts, scheduler=load_scheduler(path, scheduler_name), **common
    )
    own_modules = {k: v for k, v in own.items() if hasattr(v, "to")}
    return Inpainting(_quiet(pipe), own_modules, ctx.fastpath, ctx.options)


def _quiet(pipe: Any) -> Any:
    pipe.set_progress_bar_config(disable=True)
    return pipe


FAMILY = Family("stable_diffusion", load, load_component, files=Files("pipeline"), fast=SD15_FAST)
