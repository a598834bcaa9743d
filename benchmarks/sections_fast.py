"""Sections about the fast path's cost: warm-up after a restart, and --int8-weights (VRAM, speed, pixels)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from . import fastpath
from .context import Run
from .inputs import NEGATIVE, PROMPT, SEED
from .measure import Table, free_cached, median_seconds, memory_delta, seconds
from .sections_load import REPO_ROOT

INT8_CARDS = ("Text2Image", "CannyText2Image", "InstructPix2Pix", "Inpainting")

# A new process's start, up to Text2Image loaded (t1); the restart sections go on from there.
RESTART_HEAD = """
import json, logging, sys, time
t0 = time.perf_counter()
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
logging.getLogger("foundation_models").setLevel(logging.INFO)
from orchestrator import Orchestrator
from benchmarks import fastpath
orch = Orchestrator("Text2Image_{device}", weights="{weights}", model_dir={model_dir!r})
t_made = time.perf_counter()
{before}
with orch.manager.use("Text2Image") as model:
    t1 = time.perf_counter()
"""
RESTART = (
    RESTART_HEAD
    + """    for _ in range(2):
        model.generate({prompt!r}, {negative!r}, {size}, {size}, {steps}, 7.5, {seed})
    queued = fastpath.compiles_pending(orch)
    fastpath.wait_for_compiles(orch, 300)
    t2 = time.perf_counter()
    model.generate({prompt!r}, {negative!r}, {size}, {size}, {steps}, 7.5, {seed})
    t3 = time.perf_counter()
print(json.dumps({{"start_s": t1 - t0, "warmup_s": t2 - t1, "first_compiled_call_s": t3 - t2, "queued": queued}}))
"""
)


def restart_code(template: str, run: Run, **extra: Any) -> str:
    """A restart script (``RESTART_HEAD`` and what follows it) for this run's settings."""
    s = run.settings
    model_dir = None if s.tiny else str(s.model_dir)
    extra.setdefault("before", "")  # a statement run before the model loads
    return template.format(device=s.device, weights=s.weights, model_dir=model_dir, prompt=PROMPT,
                           negative=NEGATIVE, size=s.size, steps=s.steps[0], seed=SEED, **extra)  # fmt: skip


def run_restart(run: Run, code: str, env: dict[str, str], keep: int) -> dict[str, Any]:
    """Run a restart script in a new process: its JSON line, the process's seconds and its first ``keep`` log
    lines about compiling (what it compiled, and where: the helper, the cache or the compiled-code file)."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, env=env,
                         timeout=max(60.0, run.settings.left()))  # fmt: skip
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()
        raise RuntimeError(tail[-1] if tail else "restart run failed")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    result["log"] = [line for line in out.stderr.splitlines() if "compil" in line.lower()][:keep]
    return result


def restart(run: Run) -> None:
    """A new process with the inductor cache the latency section filled: how long until compiled graphs."""
    # this process's compiles first (when an earlier section made ours): a restart measured beside them shares
    # the CPUs and the GPU with them
    if run.orchestrator is not None:
        timeout = max(60.0, run.settings.left() / 2)
        waited, _ = seconds(lambda: fastpath.wait_for_compiles(run.orchestrator, timeout))
        run.value("restart_waited_for_compiler_s", waited)
    result = run_restart(run, restart_code(RESTART, run), dict(os.environ), keep=20)
    run.value("restart", result)
    table = Table("Fast-path warm-up after a restart (Text2Image, a new process, inductor cache on disk)",
                  ["what", "seconds"],
                  note="The latency section compiled on a cold cache; this process finds the compiled code on "
                       "disk. Warm-up = from the first call until the compiled graphs are ready; the calls "
                       "meanwhile replay graphs of the eager forward.")  # fmt: skip
    table.add("process start to model loaded", result["start_s"])
    table.add("warm-up (2 calls, then the background compile from cache)", result["warmup_s"])
    table.add("next call, compiled graphs", result["first_compiled_call_s"])
    run.table(table)


def int8(run: Run) -> None:
    """--int8-weights: each diffusion network's resident MB fp16 and int8, the whole set, speed and pixels."""
    import numpy as np

    s = run.settings
    cards = [c for c in INT8_CARDS if c in run.orchestrator_cards()]
    sizes: dict[str, dict[str, float]] = {}
    images: dict[bool, Any] = {}
    timing: dict[bool, dict[str, float]] = {}
    for int8_weights in (False, True):
        orch = run.new_orchestrator(int8_weights=int8_weights, compile=False)
        for card in cards:
            with memory_delta() as mem:
                with orch.manager.use(card):
                    pass
            sizes.setdefault(card, {})["int8" if int8_weights else "fp16"] = mem["resident_mb"]
        with orch.manager.use("Text2Image") as model:
            generate = lambda m=model: m.generate(PROMPT, NEGATIVE, s.size, s.size, s.steps[0], 7.5, SEED)  # noqa: E731
            images[int8_weights] = np.asarray(generate(), dtype=np.float32) / 255.0
            timing[int8_weights] = median_seconds(generate, s.repeats, s.warmup)
        orch.manager.free_memory([s.device])
        del orch, model
        free_cached()
    diff = np.abs(images[True] - images[False])
    table = Table("--int8-weights: resident MB per diffusion network, fp16 and int8",
                  ["card (network)", "fp16 MB", "int8 MB", "int8 / fp16"],
                  note="Text2Image's row is the shared SD1.5 base (UNet, VAE, text encoder); the others are what "
                       "each card loads beyond it.")  # fmt: skip
    for card, mb in sizes.items():
        table.add(card, mb["fp16"], mb["int8"], f"{mb['int8'] / mb['fp16']:.2f}×" if mb["fp16"] else "–")
    run.table(table)
    speed = Table(f"--int8-weights: Text2Image {s.size}², {s.steps[0]} steps, graphs of the eager forward",
                  ["weights", "median s", "pixels vs fp16: mean |diff|", "max |diff|"])  # fmt: skip
    speed.add("fp16", timing[False]["median"], 0.0, 0.0)
    speed.add("int8", timing[True]["median"], float(diff.mean()), float(diff.max()))
    run.table(speed)
    run.value("int8", {"sizes": sizes, "timing": timing, "pixel_mean_diff": float(diff.mean()),
                       "pixel_max_diff": float(diff.max())})  # fmt: skip
