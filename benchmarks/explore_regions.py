"""Exploration (device): regional compile of the full-size SD1.5 UNet, ControlNet and VAE decoder through the
project's fast path (foundation_models/fastpath/), host syncs per scheduler step, cuDNN autotuning, and a kernel breakdown.

    python benchmarks/explore_regions.py [parts]      # parts: regions,syncs,cudnn,kernels,layouts (default: all)

Prints one JSON line per figure; run it in a fresh process with an empty inductor cache for cold figures.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.explore_compile import sync_time  # noqa: E402
from foundation_models.fastpath import scheduler as fast_scheduler  # noqa: E402
from foundation_models.fastpath.compiler import BackgroundCompiler  # noqa: E402
from foundation_models.fastpath.graphs import graphed, runner_for  # noqa: E402

CFG = Path(__file__).parent / "configs"
SD = CFG / "stable-diffusion-v1-5/stable-diffusion-v1-5"
R: dict = {}


def out(key, value):
    R[key] = value
    print(json.dumps({key: value}), flush=True)


def ms_per_call(fn, n=20, warm=3):
    return round(sync_time(fn, n, warm), 2)


CHANNELS_LAST = os.environ.get("EXPLORE_CHANNELS_LAST") == "1"
DYNAMIC = os.environ.get("EXPLORE_DYNAMIC", "1") == "1"


def build(cls, folder):
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = cls.from_config(cls.load_config(folder))
    model = model.half().eval().requires_grad_(False)
    return model.to(memory_format=torch.channels_last) if CHANNELS_LAST else model


def unet_args(batch=2):
    g = torch.Generator("cuda").manual_seed(1)
    x = torch.randn(batch, 4, 64, 64, device="cuda", dtype=torch.float16, generator=g)
    e = torch.randn(batch, 77, 768, device="cuda", dtype=torch.float16, generator=g)
    return x, torch.tensor(500, device="cuda"), e


def through_fast_path(module, compiler, call, label):
    """eager, then eager graph + background compile (timed to completion), then compiled graph: ms, diff."""
    with torch.inference_mode():
        ref = call(module)
        eager_ms = ms_per_call(lambda: call(module), n=5, warm=1)
    with torch.inference_mode(), graphed([module], compiler=compiler, eager_graphs=label != "vae"):
        t0 = time.perf_counter()
        call(module)
        call(module)
        compiler.wait(600)
        out(f"{label} compile s (first call to compiled, background)", round(time.perf_counter() - t0, 1))
        runner = runner_for(module)
        out(f"{label} compile failed", runner.compile_failed)
        call(module)
        fast_ms = ms_per_call(lambda: call(module))
        out(f"{label} ms: eager / compiled-regions graph", [eager_ms, fast_ms])
        out(f"{label} kinds", list(runner.kinds.values()))
        out(f"{label} max diff vs eager", float((call(module).float() - ref.float()).abs().max()))
    return fast_ms


def regions(compiler):
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    unet = build(UNet2DConditionModel, SD / "unet")
    x, t, e = unet_args()
    through_fast_path(
        unet, compiler, lambda m: m(x, t, encoder_hidden_states=e, return_dict=False)[0], "unet"
    )
    cn = build(ControlNetModel, CFG / "lllyasviel/sd-controlnet-canny")
    cond = torch.rand(2, 3, 512, 512, device="cuda", dtype=torch.float16)
    through_fast_path(cn, compiler, lambda m: m(x, t, encoder_hidden_states=e, controlnet_cond=cond,
                                                return_dict=False)[1], "controlnet")  # fmt: skip
    vae = build(AutoencoderKL, SD / "vae")
    z = torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.float16)
    through_fast_path(vae.decoder, compiler, lambda m: m(z), "vae")
    x3, t3, e3 = unet_args(3)
    through_fast_path(unet, compiler, lambda m: m(x3, t3, encoder_hidden_states=e3, return_dict=False)[0],
                      "unet batch 3 (pix2pix)")  # fmt: skip
    return unet


def layouts():
    """What serves the calls while the compile runs: graphs of the eager UNet forward, on NCHW weights and on the
    channels-last weights that the fast path gives a module it compiles (no compile here; run without
    EXPLORE_CHANNELS_LAST)."""
    from diffusers import UNet2DConditionModel

    from foundation_models.fastpath.graphs import CudaGraphs, to_channels_last

    unet = build(UNet2DConditionModel, SD / "unet")
    x, t, e = unet_args()

    def call():
        return unet(x, t, encoder_hidden_states=e, return_dict=False)[0]

    with torch.inference_mode():
        reference = call()
        for label in ("NCHW", "channels-last"):
            if label == "channels-last":
                out("converted", to_channels_last(unet, CudaGraphs()))
            eager = ms_per_call(call, n=5, warm=1)
            with graphed([unet]):
                graph = ms_per_call(call)
                diff = float((call().float() - reference.float()).abs().max())
            out(f"unet {label} weights: eager ms, eager-graph ms, max diff", [eager, graph, diff])


def cudnn(unet):
    x, t, e = unet_args()
    runner = runner_for(unet)
    with torch.inference_mode(), graphed([unet], compiler=None):
        for bench in (False, True):
            torch.backends.cudnn.benchmark = bench
            runner.clear()  # re-capture: the graph holds the algorithms chosen at capture
            ms = ms_per_call(lambda: unet(x, t, encoder_hidden_states=e, return_dict=False))
            out(f"unet compiled-regions graph ms, cudnn.benchmark={bench}", ms)
    torch.backends.cudnn.benchmark = False


def kernels(unet):
    from torch.profiler import ProfilerActivity, profile

    x, t, e = unet_args()
    runner = runner_for(unet)
    forward = runner.compiled
    with torch.inference_mode():
        forward(x, t, encoder_hidden_states=e, return_dict=False)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            forward(x, t, encoder_hidden_states=e, return_dict=False)
            torch.cuda.synchronize()
    totals: dict[str, float] = {}
    for ev in prof.key_averages():
        name = ev.key.lower()
        kind = ("attention" if any(k in name for k in ("flash", "fmha", "attention", "sdpa")) else
                "conv" if any(k in name for k in ("conv", "cudnn", "implicit", "sm90_xmma", "nhwc")) else
                "gemm" if any(k in name for k in ("gemm", "cutlass", "nvjet", "sm90")) else
                "triton" if "triton" in name else "other")  # fmt: skip
        totals[kind] = totals.get(kind, 0) + ev.self_device_time_total / 1000
    out("unet kernel ms by kind (one call, not graphed)", {k: round(v, 2) for k, v in sorted(totals.items())})
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=70))


def syncs():
    import diffusers

    for name in ("UniPCMultistepScheduler", "EulerAncestralDiscreteScheduler"):
        for fast in (False, True):
            scheduler = getattr(diffusers, name)()
            latents = torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.float16)
            eps = torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.float16)
            extra = {"generator": torch.Generator("cpu").manual_seed(0)} if "Ancestral" in name else {}
            with fast_scheduler.scheduler_on_device(scheduler, enabled=fast):
                scheduler.set_timesteps(20, device="cuda")
                torch.cuda.synchronize()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode(1)
                    t0 = time.perf_counter()
                    for step_t in scheduler.timesteps:
                        latents = scheduler.step(eps, step_t, latents, **extra).prev_sample
                    cpu = time.perf_counter() - t0
                    torch.cuda.set_sync_debug_mode(0)
                n = sum("synchroniz" in str(w.message) for w in caught)
            out(f"{name} {'fast' if fast else 'diffusers'}: host syncs per 20 steps, CPU ms per step",
                [n, round(cpu / 20 * 1000, 3)])  # fmt: skip


if __name__ == "__main__":
    parts = (sys.argv[1] if len(sys.argv) > 1 else "regions,syncs,cudnn,kernels,layouts").split(",")
    import torch._inductor.config as inductor_config

    out("torch, compile_threads, dynamic, channels_last",
        [torch.__version__, inductor_config.compile_threads, DYNAMIC, CHANNELS_LAST])  # fmt: skip
    compiler = BackgroundCompiler(dynamic=DYNAMIC)
    unet = None
    if "syncs" in parts:
        syncs()
    if "layouts" in parts:
        layouts()
    if "regions" in parts:
        unet = regions(compiler)
    if "cudnn" in parts and unet is not None:
        cudnn(unet)
    if "kernels" in parts and unet is not None:
        kernels(unet)
    from torch._dynamo.utils import compile_times

    print(compile_times(repr="str", aggregate=True))
    print(json.dumps(R))
