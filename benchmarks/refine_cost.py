"""Issue 22: what one check-and-retry round costs, and that ``--refine 0`` costs nothing.

Full-size random SD1.5 and BLIP checkpoints (benchmarks/weights.py) on one GPU, or tiny ones on the CPU with
``--tiny``. Random weights make the pictures and the captions meaningless, so only time is measured: a
``text2image`` turn (20 steps, 512x512) through the agent with ``refine_rounds`` 0 and 1 (the BLIP caption and
VQA answers of random weights never find the car, so round 1 always retries), and the same call made directly
with ``Session.call_tool`` as the floor. The fast path replays CUDA graphs; its background compile is off so that
every row sees the same kernels.

    python -m benchmarks.refine_cost --model-dir /tmp/w [--repeats 3] [--json FILE]
    python -m benchmarks.refine_cost --tiny
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

CARDS = ["Text2Image", "ImageCaptioning", "VisualQuestionAnswering"]
PROMPT = "a red car parked on a beach"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from benchmarks.weights import build_all
    from orchestrator import Orchestrator
    from orchestrator.settings import Settings

    device = "cpu" if args.tiny else "cuda:0"
    root = args.model_dir or Path(tempfile.mkdtemp(prefix="refine-cost-"))
    built = time.perf_counter()
    if not args.tiny:
        build_all(root, "cuda", names=CARDS)
    built = time.perf_counter() - built
    settings = Settings.from_env(weights="tiny" if args.tiny else "hub", model_dir=None if args.tiny else root,
                                 compile=False, session_root=Path(tempfile.mkdtemp(prefix="refine-sessions-")))  # fmt: skip
    load = ",".join(f"{card}_{device}" for card in CARDS)
    orch = Orchestrator(load, settings=settings, brain="rules")
    command = f'/text2image prompt="{PROMPT}" seed=3'

    def turn(rounds: int) -> tuple[float, int]:
        session = orch.new_session()
        session.refine_rounds = rounds
        start = time.perf_counter()
        result = session.chat(command)
        return time.perf_counter() - start, sum(c.tool == "text2image" for c in result.tool_calls)

    def direct() -> tuple[float, int]:
        session = orch.new_session()
        start = time.perf_counter()
        session.call_tool("text2image", {"prompt": PROMPT, "seed": 3})
        return time.perf_counter() - start, 1

    rows = {}
    for label, run in [("Session.call_tool (no agent)", direct), ("turn, --refine 0", lambda: turn(0)),
                       ("turn, --refine 1 (one retry)", lambda: turn(1))]:  # fmt: skip
        run()  # untimed: loads the models, captures the CUDA graphs
        times, calls = zip(*(run() for _ in range(args.repeats)))
        rows[label] = {"median_s": statistics.median(times), "text2image_calls": calls[0]}
    base = rows["turn, --refine 0"]["median_s"]
    one = rows["turn, --refine 1 (one retry)"]["median_s"]
    print(
        f"device {device}; weights {'tiny' if args.tiny else 'full-size random fp16'}; built in {built:.0f} s"
    )
    print("| what | median s | text2image calls |\n|---|---:|---:|")
    for label, row in rows.items():
        print(f"| {label} | {row['median_s']:.3f} | {row['text2image_calls']} |")
    print(f"\nadded by one round (check + retry): {one - base:.3f} s; --refine 0 against the bare call: "
          f"{base - rows['Session.call_tool (no agent)']['median_s']:+.3f} s")  # fmt: skip
    result = {"device": device, "rows": rows, "added_per_round_s": one - base}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
