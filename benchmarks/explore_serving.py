"""Exploration (device): how fast Text2Image answers while its fast path compiles in the background, against the
same calls with the compiler off, and what shortens the calls made meanwhile.

    python benchmarks/explore_serving.py DIR idle     # --no-compile: graphs of the eager forward, nothing compiling
    python benchmarks/explore_serving.py DIR during   # calls back to back while the cold compile runs
    python benchmarks/explore_serving.py DIR beside   # --no-compile calls while another process compiles the UNet

``during`` compiles through the compile helper process (foundation_models/fastpath/helper.py) as the server does;
VISUAL_ORCHESTRATOR_COMPILE_HELPER=0 compiles in this process only, as before it existed.

DIR holds the full-size random checkpoints (built there if missing). Give each ``during`` run its own empty
VISUAL_ORCHESTRATOR_CACHE for a cold compile. ``EXPLORE_SWITCH_MS`` sets Python's GIL switch interval for the run
(default 5 ms); TORCHINDUCTOR_COMPILE_THREADS limits inductor's compile workers; ``EXPLORE_PRIORITY=1`` serves on a
high-priority CUDA stream; ``EXPLORE_AUTOTUNE=0`` turns off inductor's benchmarking of pointwise kernel configs. Prints one JSON line per figure.

Each call's wall time is set beside the serving thread's own CPU time and the GPU time between two events on its
stream, and a watchdog thread that wakes every millisecond records when it could not run for 0.1 s or more (another
thread held the GIL) and where the compile thread was just after: a stall with little CPU and GPU time of the
call's own and a watchdog gap at the same moment is the GIL. ``beside`` tells the GIL from the rest: the same
cold compile (explore_warmup.py serial, its own empty cache) in a child process, this one serving without a
compiler; stalls that stay there come from sharing the GPU or the CPUs, not the interpreter.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def out(key, value):
    print(json.dumps({key: value}), flush=True)


def summary(seconds):
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)
    return {"n": len(ordered), "median": round(statistics.median(ordered), 4), "min": round(ordered[0], 4),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 4), "max": round(ordered[-1], 4)}  # fmt: skip


class Watchdog(threading.Thread):
    """Wakes every millisecond; a wake-up 0.1 s late or more means another thread held the GIL that long."""

    def __init__(self, t0: float):
        super().__init__(daemon=True)
        self.t0, self.gaps, self.stop = t0, [], False

    def run(self):
        while not self.stop:
            before = time.perf_counter()
            time.sleep(0.001)
            gap = time.perf_counter() - before
            if gap >= 0.1:
                where = [
                    [
                        f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}"
                        for f in traceback.extract_stack(frame)[-4:]
                    ]
                    for ident, frame in sys._current_frames().items()
                    if ident not in (self.ident, threading.main_thread().ident)
                ]
                self.gaps.append((round(before - self.t0, 2), round(gap, 3), where))


def main() -> None:
    model_dir, mode = Path(sys.argv[1]), sys.argv[2]
    switch_ms = float(os.environ.get("EXPLORE_SWITCH_MS", "0") or 0)
    if switch_ms:
        sys.setswitchinterval(switch_ms / 1000)
    import torch

    from benchmarks.inputs import NEGATIVE, PROMPT, SEED
    from benchmarks.weights import build_all
    from orchestrator import Orchestrator

    build_all(model_dir, "cuda", names=["Text2Image"])
    if os.environ.get("EXPLORE_AUTOTUNE") == "0":
        torch._inductor.config.triton.autotune_pointwise = False
    stream = torch.cuda.Stream(priority=-5) if os.environ.get("EXPLORE_PRIORITY") == "1" else None
    out("stream priority, autotune pointwise", [stream.priority if stream is not None else 0,
                                                torch._inductor.config.triton.autotune_pointwise])  # fmt: skip
    out("mode, switch interval ms, compile threads, cpus",
        [mode, sys.getswitchinterval() * 1000, torch._inductor.config.compile_threads, os.cpu_count()])  # fmt: skip
    orch = Orchestrator("Text2Image_cuda:0", weights="hub", model_dir=model_dir, compile=mode == "during")
    compiler = orch.fastpath.compiler

    costs = []  # (t, wall s, this thread's CPU s, GPU s between events on its stream)

    def call():
        if stream is None:
            return timed_call()
        with torch.cuda.stream(stream):
            return timed_call()

    def timed_call():
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        started, cpu = time.perf_counter(), time.thread_time()
        start.record()
        model.generate(PROMPT, NEGATIVE, 512, 512, 20, 7.5, SEED)
        end.record()
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
        costs.append((round(started - t0, 2), round(wall, 3), round(time.thread_time() - cpu, 3),
                      round(start.elapsed_time(end) / 1000, 3)))  # fmt: skip
        return wall

    t0 = time.perf_counter()
    watchdog = Watchdog(t0)
    watchdog.start()
    with orch.manager.use("Text2Image") as model:
        t0 = watchdog.t0 = time.perf_counter()
        first, second = call(), call()
        out("first call (eager) s, second (captures graphs) s", [round(first, 3), round(second, 3)])
        timeline = []
        if mode == "idle":
            timeline = [call() for _ in range(20)]
            out("idle calls s", summary(timeline))
            return
        child = None
        if mode == "beside":
            cache = Path(os.environ.get("TMPDIR", "/tmp")) / f"explore-serving-beside-{os.getpid()}"
            child = subprocess.Popen([sys.executable, str(Path(__file__).parent / "explore_warmup.py"), "serial"],
                                     env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)})  # fmt: skip
        compiling = (lambda: child.poll() is None) if child is not None else compiler.busy
        while compiling() and time.perf_counter() - t0 < 400:
            timeline.append((round(time.perf_counter() - t0, 2), round(call(), 4)))
        if child is not None:
            out("child compile exit code", child.wait(600))
        compiler.wait(600)
        ready = time.perf_counter() - t0
        out("calls while compiling s", summary([s for _, s in timeline]))
        out("compile done after s (from the first call)", round(ready, 1))
        out("capture of compiled graphs, call s", round(call(), 3))
        out("compiled calls s", summary([call() for _ in range(10)]))
        out("timeline (t, call s)", timeline)
        slow = [c for c in costs if c[1] > 0.5]
        out("slow calls (t, wall s, own CPU s, GPU s)", slow)
        out(
            "GIL gaps >= 0.1 s while compiling: count, total s",
            [len(watchdog.gaps), round(sum(g[1] for g in watchdog.gaps), 1)],
        )
        out("GIL gaps (t, s, compile thread's frames)", sorted(watchdog.gaps, key=lambda g: -g[1])[:40])


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
