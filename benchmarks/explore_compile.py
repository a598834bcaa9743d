"""Exploration (device): inductor + our CUDA graphs, warm-up cold/warm cache, VAE, int8 storage, thread compile."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from foundation_models.fastpath.graphs import GraphedForward  # noqa: E402

CFG = Path(__file__).parent / "configs/stable-diffusion-v1-5/stable-diffusion-v1-5"
R: dict = {}


def out(key, value):
    R[key] = value
    print(key, value, flush=True)


def sync_time(fn, n=20, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1000


def build_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CFG / "unet"))
    return unet.half().eval().requires_grad_(False)


def inputs():
    g = torch.Generator("cuda").manual_seed(1)
    x = torch.randn(2, 4, 64, 64, device="cuda", dtype=torch.float16, generator=g)
    t = torch.tensor(500, device="cuda")
    e = torch.randn(2, 77, 768, device="cuda", dtype=torch.float16, generator=g)
    return x, t, e


def call(fwd, x, t, e):
    return fwd(x, t, encoder_hidden_states=e, return_dict=False)[0]


def graphed_timing(unet, fwd, label):
    x, t, e = inputs()
    runner = GraphedForward(unet)
    runner.eager = fwd
    with torch.no_grad():
        ms = sync_time(lambda: call(runner, x, t, e))
        y = call(runner, x, t, e)
    out(f"{label} graph ms/step", round(ms, 2))
    return y


def inductor_flags(extra: bool):
    import torch._inductor.config as c

    if extra:
        c.conv_1x1_as_mm = True
        c.coordinate_descent_tuning = True
        c.epilogue_fusion = False
        c.coordinate_descent_check_all_directions = True


def compile_part(label, extra=False, cl=False, int8=False):
    torch._dynamo.reset()
    inductor_flags(extra)
    unet = build_unet()
    if cl:
        unet = unet.to(memory_format=torch.channels_last)
    if int8:
        quantize_int8(unet)
    x, t, e = inputs()
    eager = type(unet).forward.__get__(unet)
    with torch.no_grad():
        ref = call(eager, x, t, e).float()
    compiled = torch.compile(eager, fullgraph=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        call(compiled, x, t, e)
    torch.cuda.synchronize()
    out(f"{label} compile s", round(time.perf_counter() - t0, 1))
    y = graphed_timing(unet, compiled, label)
    out(f"{label} max diff vs eager", float((y.float() - ref).abs().max()))
    del unet, compiled
    torch.cuda.empty_cache()


def quantize_int8(model):
    from foundation_models.int8_weights import quantize_

    return quantize_(model)


def vae_part():
    from diffusers import AutoencoderKL

    torch._dynamo.reset()
    with torch.device("cuda"):
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CFG / "vae")).half().eval()
    z = torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.float16)
    dec = type(vae).decode.__get__(vae)
    with torch.no_grad():
        out("vae eager ms", round(sync_time(lambda: dec(z, return_dict=False)[0], n=10), 2))
        r = GraphedForward(vae)
        r.eager = lambda z: dec(z, return_dict=False)[0]
        out("vae graph ms", round(sync_time(lambda: r(z), n=10), 2))
        comp = torch.compile(lambda z: dec(z, return_dict=False)[0], fullgraph=True)
        t0 = time.perf_counter()
        comp(z)
        torch.cuda.synchronize()
        out("vae compile s", round(time.perf_counter() - t0, 1))
        r2 = GraphedForward(vae)
        r2.eager = comp
        out("vae compiled graph ms", round(sync_time(lambda: r2(z), n=10), 2))


def memory_int8():
    unet = build_unet()
    torch.cuda.synchronize()
    a = torch.cuda.memory_allocated()
    x, t, e = inputs()
    with torch.no_grad():
        ref = call(unet, x, t, e).float()
    n = quantize_int8(unet)
    torch.cuda.empty_cache()
    b = torch.cuda.memory_allocated()
    out("int8 layers", n)
    out("int8 unet MB saved", round((a - b) / 2**20))
    with torch.no_grad():
        y = call(unet, x, t, e).float()
    out("int8 rel err of unet output", float((y - ref).norm() / ref.norm()))
    eager = type(unet).forward.__get__(unet)
    graphed_timing(unet, eager, "int8 eager-graph")
    del unet
    torch.cuda.empty_cache()


def thread_compile():
    """Compile in a background thread while the main thread replays graphs of eager."""
    torch._dynamo.reset()
    unet = build_unet()
    x, t, e = inputs()
    eager = type(unet).forward.__get__(unet)
    runner = GraphedForward(unet)
    compiled = torch.compile(eager, fullgraph=True)
    done = {}

    def work():
        t0 = time.perf_counter()
        s = torch.cuda.Stream()
        with torch.no_grad(), torch.cuda.stream(s):
            call(compiled, x.clone(), t.clone(), e.clone())
        s.synchronize()
        done["s"] = time.perf_counter() - t0

    with torch.no_grad():
        call(runner, x, t, e)
        call(runner, x, t, e)
        th = threading.Thread(target=work)
        th.start()
        times = []
        while th.is_alive():
            t0 = time.perf_counter()
            call(runner, x, t, e)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        th.join()
        times.sort()
        out("thread compile s", round(done.get("s", -1), 1))
        out(
            "main-thread step during compile ms median/p90",
            [round(times[len(times) // 2] * 1000, 2), round(times[int(len(times) * 0.9)] * 1000, 2)],
        )
        runner2 = GraphedForward(unet)
        runner2.eager = compiled
        out("after thread compile graph ms", round(sync_time(lambda: call(runner2, x, t, e)), 2))


def warm_child():
    unet = build_unet()
    x, t, e = inputs()
    compiled = torch.compile(type(unet).forward.__get__(unet), fullgraph=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        call(compiled, x, t, e)
    torch.cuda.synchronize()
    print(json.dumps({"warm compile s": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        warm_child()
        sys.exit(0)
    parts = sys.argv[1].split(",")
    out("torch", torch.__version__)
    import torch._inductor.config as c

    out("compile_threads", c.compile_threads)
    x, t, e = inputs()
    if "base" in parts:
        unet = build_unet()
        eager = type(unet).forward.__get__(unet)
        with torch.no_grad():
            out("eager ms/step", round(sync_time(lambda: call(eager, x, t, e)), 2))
        graphed_timing(unet, eager, "eager")
        with torch.no_grad():
            unet.to(memory_format=torch.channels_last)
            graphed_timing(unet, eager, "eager channels_last")
        del unet
    if "compile" in parts:
        compile_part("inductor default")
    if "child" in parts:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, __file__, "child"], capture_output=True, text=True)
        out("child total s", round(time.perf_counter() - t0, 1))
        print(p.stdout[-2000:], p.stderr[-2000:])
    if "int8mem" in parts:
        memory_int8()
    if "int8compile" in parts:
        compile_part("inductor int8", int8=True)
    if "vae" in parts:
        vae_part()
    if "thread" in parts:
        thread_compile()
    if "extra" in parts:
        compile_part("inductor extra flags", extra=True)
    print(json.dumps(R))
