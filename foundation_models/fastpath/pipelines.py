"""The fast path applied to a diffusers pipeline: which of its modules get which tiers (graphs.py).

The UNet and ControlNet run once per step: graphs of their eager forward, then of their compiled one, with their
convolution weights in channels-last order once compiling. The VAE decoder runs once per image: worth
compiling, not worth a graph of its eager forward. The text encoder is one short launch-bound call per prompt: a
graph of its eager forward is enough. The scheduler steps without host syncs (scheduler.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .graphs import graphed, release, runner
from .helper import set_owner
from .scheduler import scheduler_on_device

if TYPE_CHECKING:
    from .compiler import BackgroundCompiler

CHANNELS_LAST = True  # the denoisers' weights in NHWC once compiling: faster compiled steps


@contextmanager
def fast_pipeline(
    pipe: Any, enabled: bool = True, compiler: BackgroundCompiler | None = None
) -> Iterator[None]:
    """Within the block, the pipeline's UNet, ControlNet, VAE decoder and text encoder replay CUDA graphs where
    they can; with a ``compiler``, graphs of the compiled forward of all but the text encoder once ready."""
    vae = getattr(pipe, "vae", None)
    for decoder in decoders(pipe):  # built again from its VAE's config by the compile helper
        set_owner(decoder, vae, "decoder")
    with (
        graphed(denoisers(pipe), enabled, compiler, channels_last=CHANNELS_LAST and compiler is not None),
        graphed(decoders(pipe), enabled, compiler, eager_graphs=False),
        graphed(encoders(pipe), enabled),
        scheduler_on_device(getattr(pipe, "scheduler", None), enabled),
    ):
        yield


def release_pipeline(pipe: Any) -> None:
    """Drop the graphs of the pipeline's modules (before they move: graphs hold their device addresses)."""
    release(fast_modules(pipe))


def compile_state(pipe: Any) -> str:
    """'compiling' while a compile of the pipeline's UNet, ControlNet or VAE decoder is queued or running,
    'compiled' once one has finished (the next call replays its graph), else 'eager'."""
    runners = [r for r in map(runner, denoisers(pipe) + decoders(pipe)) if r is not None]
    for r in runners:  # list() copies in one step: the compiler's thread adds to these sets meanwhile
        if not r.compile_failed and any(key not in r.compiled_keys for key in list(r.submitted)):
            return "compiling"
    return "compiled" if any(r.compiled_keys for r in runners) else "eager"


def denoisers(pipe: Any) -> list[Any]:
    """The modules of a diffusers pipeline that run once per step: its UNet and ControlNet."""
    return [m for m in (getattr(pipe, "unet", None), getattr(pipe, "controlnet", None)) if m is not None]


def encoders(pipe: Any) -> list[Any]:
    """The text encoder: one short call per prompt, launch-bound (a graph of its eager forward is enough)."""
    encoder = getattr(pipe, "text_encoder", None)
    return [encoder] if encoder is not None else []


def decoders(pipe: Any) -> list[Any]:
    """The VAE's decoder: once per image, worth compiling, not worth a graph of its eager forward."""
    decoder = getattr(getattr(pipe, "vae", None), "decoder", None)
    return [decoder] if decoder is not None else []


def fast_modules(pipe: Any) -> list[Any]:
    """Every module whose graphs ``fast_pipeline`` may hold (what ``release`` takes before a move)."""
    return denoisers(pipe) + decoders(pipe) + encoders(pipe)
