"""Throughput of text2image calls from many sessions at once: one process against Ray Serve replicas.

    python -m benchmarks.ray_throughput [--sessions 8] [--calls 4] [--side 256] [--replicas 1 2]

Tiny weights on the CPU (the images are noise; the work is a real UNet/VAE pass at ``--side`` pixels). Each
setup first makes one picture per replica (the models load), then ``--sessions`` sessions make ``--calls``
pictures each, all at once; the figure is pictures per second of wall time. One process runs them one at a
time on its device lock; each replica runs its own, so replicas help as far as the machine has cores for them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .measure import Table

LOAD = "Text2Image_cpu"
ROOT = Path(__file__).resolve().parents[1]
DEPLOY = "deployments:\n  diffusion: {{families: [stable_diffusion], num_replicas: {n}, num_cpus: 0.5}}\n"


def workload(orch: Any, sessions: int, calls: int, side: int) -> float:
    """Seconds for ``sessions`` sessions at once to make ``calls`` pictures each."""
    folks = [orch.new_session() for _ in range(sessions)]

    def draw(i: int) -> None:
        for j in range(calls):
            call = folks[i].call_tool("text2image", {"prompt": "a boat", "seed": i * 100 + j, "width": side,
                                                     "height": side})  # fmt: skip
            assert call.error is None, call.error

    started = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(draw, range(sessions)))
    return time.perf_counter() - started


def warm(orch: Any, n: int, side: int) -> None:
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda i: orch.new_session().call_tool("text2image", {"prompt": "warm", "seed": i,
                                                                            "width": side, "height": side}),
                      range(n)))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--calls", type=int, default=4, help="pictures per session")
    parser.add_argument("--side", type=int, default=256, help="picture side in pixels")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VISUAL_ORCHESTRATOR_DISCOVER", "0")

    import ray
    import torch
    from ray import serve

    from orchestrator.cluster import serve_on_ray
    from orchestrator.engine import Orchestrator
    from orchestrator.settings import Settings

    folder = Path(tempfile.mkdtemp(prefix="vo-ray-bench-"))
    settings = Settings.from_env(weights="tiny", session_root=folder / "sessions")
    total = args.sessions * args.calls
    table = Table(f"text2image, {args.sessions} sessions × {args.calls} pictures, {args.side}×{args.side}, tiny "
                  f"weights, CPU ({os.cpu_count()} cores)",
                  ["setup", "pictures", "seconds", "pictures/s", "vs one process"])  # fmt: skip
    base = None
    with Orchestrator(LOAD, settings=settings, brain="rules") as alone:
        warm(alone, 1, args.side)
        # torch's own thread count, then one thread as Ray gives a replica of under one CPU (OMP_NUM_THREADS=1)
        for threads in dict.fromkeys([torch.get_num_threads(), 1]):
            torch.set_num_threads(threads)
            seconds = workload(alone, args.sessions, args.calls, args.side)
            base = base or seconds
            table.add(f"one process (torch {threads} thread{'s' * (threads > 1)})", total, seconds,
                      total / seconds, base / seconds)  # fmt: skip

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
    try:
        for n in args.replicas:
            (folder / "deploy.yaml").write_text(DEPLOY.format(n=n))
            orch = serve_on_ray(LOAD, settings=settings, deploy=folder / "deploy.yaml", brain="rules")
            warm(orch, 2 * n, args.side)
            seconds = workload(orch, args.sessions, args.calls, args.side)
            replicas = sum(1 for count in orch.remote.calls.values() if count)
            table.add(f"Ray Serve, {n} replica{'s' * (n > 1)} (answered: {replicas})", total, seconds,
                      total / seconds, base / seconds)  # fmt: skip
            orch.remote.close()
    finally:
        serve.shutdown()
        ray.shutdown()
    print(table.markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
