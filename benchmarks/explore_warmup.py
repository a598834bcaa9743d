"""Exploration (device): where the cold regional compile of the full-size SD1.5 UNet spends its time, which
regions pay for themselves, and whether worker processes that each compile a share of the block signatures
into inductor's on-disk cache shorten the warm-up (this process then finds every graph in the cache).

    python benchmarks/explore_warmup.py serial [REGION,REGION]   # this process alone (default: every region)
    python benchmarks/explore_warmup.py parallel K               # K worker processes first, then this process

Give each run its own empty TORCHINDUCTOR_CACHE_DIR for cold figures (the same one again: a restart). Prints one
JSON line per figure and the compiler's own time breakdown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.explore_compile import sync_time  # noqa: E402
from foundation_models.fastpath.compiler import BackgroundCompiler  # noqa: E402
from foundation_models.fastpath.graphs import MAX_GRAPHS, graphed, runner_for  # noqa: E402
from foundation_models.fastpath.inductor import inductor_compile, raise_recompile_limit, use_inductor_cache  # noqa: E402
from foundation_models.fastpath.regions import REGIONS, RegionCompiler, RegionForward, outermost  # noqa: E402
from orchestrator.engine import inductor_cache_dir  # noqa: E402

SD = Path(__file__).parent / "configs/stable-diffusion-v1-5/stable-diffusion-v1-5"


def out(key, value):
    print(json.dumps({key: value}), flush=True)


def build_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD / "unet"))
    unet = unet.half().eval().requires_grad_(False)
    g = torch.Generator("cuda").manual_seed(1)
    x = torch.randn(2, 4, 64, 64, device="cuda", dtype=torch.float16, generator=g)
    e = torch.randn(2, 77, 768, device="cuda", dtype=torch.float16, generator=g)
    t = torch.tensor(500, device="cuda")
    return unet, lambda: unet(x, t, encoder_hidden_states=e, return_dict=False)[0]


def breakdown(top=14):
    from torch._dynamo.utils import compile_times

    names, values = compile_times(repr="csv", aggregate=True)
    pairs = sorted(zip(names, values), key=lambda p: -float(p[1] or 0))[:top]
    out("compile breakdown s", {n: round(float(v), 1) for n, v in pairs})


def through_fast_path(unet, call, regions):
    compiler = BackgroundCompiler(regions=regions, dynamic=False)
    with torch.inference_mode():
        call()
        eager_ms = sync_time(call, 5, 1)
    with torch.inference_mode(), graphed([unet], compiler=compiler):
        t0 = time.perf_counter()
        call()
        call()
        compiler.wait(900)
        compile_s = time.perf_counter() - t0
        call()
        runner = runner_for(unet)
        return {"compile_s": round(compile_s, 1), "eager_ms": round(eager_ms, 2),
                "graph_ms": round(sync_time(call, 20, 3), 2), "kinds": list(runner.kinds.values()),
                "failed": runner.compile_failed}  # fmt: skip


def signatures(unet, call, regions):
    """(block class, input signature) -> the first block that has it, in call order."""

    def sig(value):
        if isinstance(value, torch.Tensor):
            return ("T", tuple(value.shape), str(value.dtype), tuple(value.stride()))
        return repr(value)

    found: dict = {}
    hooks = []
    for block in outermost(unet, regions):

        def hook(module, args, kwargs):
            key = (
                type(module).__name__,
                tuple(map(sig, args)),
                tuple((k, sig(v)) for k, v in sorted(kwargs.items())),
            )
            found.setdefault(key, module)

        hooks.append(block.register_forward_pre_hook(hook, with_kwargs=True))
    with torch.inference_mode():
        call()
    for h in hooks:
        h.remove()
    return list(found.values())


def worker(index: int, count: int) -> None:
    """Compile every count-th block signature (from index) into the on-disk cache, then exit."""
    t0 = time.perf_counter()
    unet, call = build_unet()
    mine = signatures(unet, call, REGIONS)[index::count]
    raise_recompile_limit(MAX_GRAPHS)
    owner = RegionCompiler(inductor_compile)
    by_class: dict = {}
    for block in mine:
        cls = type(block)
        compiled = by_class.setdefault(cls, inductor_compile(cls.forward))
        block.forward = RegionForward(block, compiled, owner)
    with torch.inference_mode(), owner.calling():
        call()
    torch.cuda.synchronize()
    out(f"worker {index}/{count}: blocks, s", [len(mine), round(time.perf_counter() - t0, 1)])


def parallel(count: int) -> None:
    unet, call = build_unet()
    cpus = os.cpu_count() or 1
    env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS=str(max(1, cpus // count)))
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "worker", str(i), str(count)], env=env)
             for i in range(count)]  # fmt: skip
    codes = [p.wait() for p in procs]
    workers_s = time.perf_counter() - t0
    out(f"parallel {count}: workers s, exit codes", [round(workers_s, 1), codes])
    result = through_fast_path(unet, call, REGIONS)
    out(f"parallel {count}: this process then", result)
    out(f"parallel {count}: total warm-up s", round(workers_s + result["compile_s"], 1))
    breakdown()


if __name__ == "__main__":
    mode = sys.argv[1]
    use_inductor_cache(inductor_cache_dir())
    if mode == "worker":
        worker(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "parallel":
        out("torch, cache dir", [torch.__version__, os.environ.get("TORCHINDUCTOR_CACHE_DIR")])
        parallel(int(sys.argv[2]))
    else:
        regions = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else REGIONS
        out("torch, cache dir", [torch.__version__, os.environ.get("TORCHINDUCTOR_CACHE_DIR")])
        unet, call = build_unet()
        n = len(signatures(unet, call, regions))
        out(f"serial {','.join(regions)} ({n} signatures)", through_fast_path(unet, call, regions))
        breakdown()
