# ruff: noqa: B023  (the lambdas run before the loop moves on)
"""Where a compiled fast-path call spends its time (device): median per call, then one profiled call.

python -m benchmarks.profile_fast --model-dir /tmp/weights
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from foundation_models.fastpath.graphs import _RUNNER

from .inputs import INSTRUCTION, NEGATIVE, PROMPT, SEED, photo


def timed(fn, n=5):
    out = []
    for _ in range(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return round(statistics.median(out), 4)


def host_syncs(fn):
    """How many times one call makes the CPU wait for the GPU (torch's sync debug mode)."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode(1)
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def profile(fn, label):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    counts = {e.key: e.count for e in events if e.key in (
        "cudaGraphLaunch", "cudaStreamSynchronize", "cudaMemcpyAsync", "cudaDeviceSynchronize", "cudaLaunchKernel",
        "Torch-Compiled Region", "cudaEventSynchronize")}  # fmt: skip
    print(f"\n## {label}: counts {counts}")
    print(events.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))


def runner_state(module, name):
    r = module.__dict__.get(_RUNNER)
    if r is None:
        print(name, "no runner")
        return
    print(
        name,
        "kinds",
        list(r.kinds.values()),
        "compiled_keys",
        len(r.compiled_keys),
        "failed",
        r.compile_failed,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--cards", default="Text2Image,CannyText2Image")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--scheduler-variant",
        action="store_true",
        help="also time diffusers' scheduler as it is (host syncs)",
    )
    args = parser.parse_args()
    from orchestrator import Orchestrator

    from .weights import build_all

    cards = args.cards.split(",")
    build_all(args.model_dir, "cuda", names=cards)
    orch = Orchestrator(",".join(f"{c}_cuda:0" for c in cards), weights="hub", model_dir=args.model_dir)
    compiler = orch.fastpath.compiler
    condition = photo(512).convert("L").convert("RGB")
    jobs = {
        "Text2Image": lambda m: m.generate(PROMPT, NEGATIVE, 512, 512, 20, 7.5, SEED),
        "CannyText2Image": lambda m: m.generate(condition, PROMPT, NEGATIVE, 20, 7.5, SEED),
        "InstructPix2Pix": lambda m: m.edit(photo(512), INSTRUCTION, 20, 7.5, 1.2, SEED),
        "Text2Image 50": lambda m: m.generate(PROMPT, NEGATIVE, 512, 512, 50, 7.5, SEED),
    }
    for label, job in [(c, j) for c, j in jobs.items() if c.split()[0] in cards]:
        card = label.split()[0]
        with orch.manager.use(card) as model:
            t0 = time.perf_counter()
            job(model)
            job(model)
            graphs_only = timed(lambda: job(model), 3)
            compiler.wait(300)
            warm = time.perf_counter() - t0
            job(model)  # captures the compiled graphs
            compiled = timed(lambda: job(model))
            print(
                f"\n# {label}: eager graphs {graphs_only} s; warm-up {warm:.1f} s; compiled graphs {compiled} s"
            )
            for name in ("unet", "controlnet"):
                if getattr(model.pipe, name, None) is not None:
                    runner_state(getattr(model.pipe, name), name)
            runner_state(model.pipe.vae.decoder, "vae.decoder")
            unet = model.pipe.unet
            r = unet.__dict__.get(_RUNNER)
            if r is not None and r.compiled is not None and label == "Text2Image":
                x = torch.randn(2, 4, 64, 64, device="cuda", dtype=torch.float16)
                e = torch.randn(2, 77, 768, device="cuda", dtype=torch.float16)
                t = torch.tensor(500, device="cuda")
                with torch.inference_mode():
                    unet.forward = r
                    for _ in range(3):
                        unet(x, t, encoder_hidden_states=e, return_dict=False)
                    ms = timed(lambda: unet(x, t, encoder_hidden_states=e, return_dict=False), 20) * 1000
                    del unet.forward
                print(f"UNet alone through its runner: {ms:.2f} ms per call; kinds {list(r.kinds.values())}")
            print(f"# {label}: host syncs per call {host_syncs(lambda: job(model))}")
            if args.scheduler_variant:  # diffusers' scheduler as is: CPU sigma table, blocking syncs
                import contextlib

                import numpy as np

                from foundation_models.fastpath import pipelines

                reference = np.asarray(job(model), dtype=np.float32) / 255
                kept = pipelines.scheduler_on_device
                pipelines.scheduler_on_device = lambda *a, **k: contextlib.nullcontext()
                try:
                    variant = timed(lambda: job(model))
                    syncs = host_syncs(lambda: job(model))
                    diff = np.abs(np.asarray(job(model), dtype=np.float32) / 255 - reference)
                finally:
                    pipelines.scheduler_on_device = kept
                print(
                    f"# {label}: diffusers' scheduler {variant} s, {syncs} host syncs (default {compiled} s); "
                    f"pixels max {diff.max():.4f} mean {diff.mean():.5f}"
                )
            if not args.no_profile:
                profile(lambda: job(model), card)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
