"""Before and after on one GPU: run_all in two source trees, then latency and same-seed outputs side by side.

Each tree runs its own ``benchmarks.run_all`` (same cards, sections and flags) and then a probe that calls
each tool three times through the public API (``Orchestrator``, ``Session.call_tool``; the first call is eager,
the second captures graphs, the third replays them) with a fixed seed, and records a sha256 of every output.
Equal digests in both trees mean the same images and text for the same seed. The trees share the weights
and, unless --fresh-cache, the inductor cache: the first side compiles cold, the second loads from disk,
which changes only the warm-up column, not the timed calls.

    python -m benchmarks.compare OLD_TREE NEW_TREE --model-dir /tmp/w --out /tmp/compare
    python -m benchmarks.compare OLD_TREE NEW_TREE --model-dir /tmp/w --out /tmp/compare --sides old
    python -m benchmarks.compare OLD_TREE NEW_TREE --model-dir /tmp/w --out /tmp/compare --sides new,report

A side whose results are already in --out is not run again, so a run cut short can go on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .inputs import INSTRUCTION, PROMPT, QUESTION, SEED, edge_map, photo
from .measure import Table

CARDS = "Text2Image,CannyText2Image,InstructPix2Pix,ImageCaptioning,VisualQuestionAnswering"
SECTIONS = "weights,ours,baseline,latency,agreement"
TOOL_OF_CARD = {
    "Text2Image": "text2image",
    "CannyText2Image": "canny2image",
    "InstructPix2Pix": "instruct_pix2pix",
    "ImageCaptioning": "image_captioning",
    "VisualQuestionAnswering": "visual_question_answering",
}
CALLS = {  # tool -> its arguments; "photo" and "edges" name the uploaded inputs
    "text2image": {"prompt": PROMPT, "seed": SEED},
    "canny2image": {"image": "edges", "prompt": PROMPT, "seed": SEED},
    "instruct_pix2pix": {"image": "photo", "instruction": INSTRUCTION, "seed": SEED},
    "image_captioning": {"image": "photo"},
    "visual_question_answering": {"image": "photo", "question": QUESTION},
}

# Runs in each tree with only its own code on the path; public API only, so any version of the project works.
PROBE = r"""
import hashlib, json, re, sys, tempfile
import numpy as np
from orchestrator import Orchestrator
spec, weights, model_dir, inputs, calls, out = json.loads(sys.argv[1])
# compile off: no compile to outlive the calls; the compiled path's pixels are run_all's agreement section
import inspect
if "settings" in inspect.signature(Orchestrator).parameters:  # a tree with one Settings object
    from orchestrator.settings import Settings
    no_compile = {"settings": Settings.from_env(compile=False)}
else:
    no_compile = {"compile": False}
orch = Orchestrator(spec, weights=weights, model_dir=None if weights == "tiny" else model_dir, **no_compile)
session = orch.new_session(folder=tempfile.mkdtemp(prefix="vo-compare-"))
names = {role: session.upload(path) for role, path in inputs.items()}
digests = {}
for tool, args in calls.items():
    args = {k: names.get(v, v) if k == "image" else v for k, v in args.items()}
    digests[tool] = []
    for _ in range(3):
        call = session.call_tool(tool, args)
        if call.error:
            digests[tool].append("error: " + call.error[:200])
        elif call.images:
            pixels = np.asarray(session.images.open(call.images[-1]).convert("RGB"))
            digests[tool].append(hashlib.sha256(pixels.tobytes()).hexdigest())
        else:  # text: image names are random, so they are left out of the digest
            text = re.sub(r"image/[0-9a-f]+\.png", "image/*", call.output)
            digests[tool].append("text:" + hashlib.sha256(text.encode()).hexdigest() + " " + text[:60])
open(out, "w").write(json.dumps(digests, indent=1))
"""


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    inputs = write_inputs(args.out)
    for side in args.sides.split(","):
        if side in sides:
            run_side(side, sides[side], inputs, args)
    if "report" in args.sides.split(","):
        text = report(args.out)
        (args.out / "report.md").write_text(text, encoding="utf-8")
        print(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path, help="source tree before (a checkout's root)")
    p.add_argument("new", type=Path, help="source tree after")
    p.add_argument(
        "--model-dir", type=Path, required=True, help="full-size random weights (built if missing)"
    )
    p.add_argument("--out", type=Path, required=True, help="results, logs and the inductor cache go here")
    p.add_argument("--cards", default=CARDS)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per latency measurement")
    p.add_argument("--time-limit", type=float, default=330, help="run_all's --time-limit for each side")
    p.add_argument("--sides", default="old,new,report", help="what to do, in order: old, new, report")
    p.add_argument("--fresh-cache", action="store_true", help="each side compiles on its own empty cache")
    p.add_argument("--no-probe", action="store_true", help="skip the tool-call digests")
    p.add_argument(
        "--tiny", action="store_true", help="tiny weights on the CPU: a dry run of this tool itself"
    )
    return p


def write_inputs(out: Path) -> dict[str, str]:
    """The probe's uploads, made here once so both trees get the same files."""
    paths = {"photo": out / "inputs" / "photo.png", "edges": out / "inputs" / "edges.png"}
    paths["photo"].parent.mkdir(exist_ok=True)
    photo(512).save(paths["photo"])
    edge_map(512).save(paths["edges"])
    return {role: str(path) for role, path in paths.items()}


def run_side(side: str, tree: Path, inputs: dict[str, str], args: argparse.Namespace) -> None:
    results = args.out / f"{side}.json"
    env = side_env(tree, args.out / ("cache-" + side if args.fresh_cache else "cache"))
    weights = ["--tiny", "--device", "cpu"] if args.tiny else ["--model-dir", str(args.model_dir)]
    command = [sys.executable, "-m", "benchmarks.run_all", *weights, "--cards", args.cards, "--sections",
               SECTIONS, "--repeats", str(args.repeats), "--time-limit", str(args.time_limit), "--json",
               str(results), "--out", str(args.out / f"{side}.md")]  # fmt: skip
    if not results.is_file():
        step(f"{side}: run_all in {tree}", command, tree, env, args.out / f"{side}.log")
    probe = args.out / f"{side}-probe.json"
    if not (args.no_probe or probe.is_file()):
        device, weights = ("cpu", "tiny") if args.tiny else ("cuda:0", "hub")
        spec = ",".join(f"{card}_{device}" for card in args.cards.split(","))
        tools = {TOOL_OF_CARD[c]: CALLS[TOOL_OF_CARD[c]] for c in args.cards.split(",") if c in TOOL_OF_CARD}
        payload = json.dumps([spec, weights, str(args.model_dir), inputs, tools, str(probe)])
        step(
            f"{side}: probe",
            [sys.executable, "-c", PROBE, payload],
            tree,
            env,
            args.out / f"{side}-probe.log",
        )


def side_env(tree: Path, cache: Path) -> dict[str, str]:
    """The tree's code first on the path (wheels installed with --target stay after it), one shared cache."""
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "VISUAL_ORCHESTRATOR_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def step(what: str, command: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    started = time.perf_counter()
    print(f"== {what}", flush=True)
    with log.open("w") as stream:
        code = subprocess.run(command, cwd=cwd, env=env, stdout=stream, stderr=subprocess.STDOUT).returncode
    print(f"   exit {code} after {time.perf_counter() - started:.0f} s; log {log}", flush=True)
    if code:
        print("\n".join(log.read_text(errors="replace").splitlines()[-15:]), flush=True)


def report(out: Path) -> str:
    """Markdown: latency and agreement from both run_all results, and the probe's digests."""
    old, new = (_load(out / f"{side}.json") for side in ("old", "new"))
    parts = [_machines(old, new), latency_table(old, new).markdown(), agreement_table(old, new).markdown()]
    old_probe, new_probe = _load(out / "old-probe.json"), _load(out / "new-probe.json")
    if old_probe or new_probe:
        parts.append(outputs_table(old_probe, new_probe).markdown())
    return "\n".join(parts)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _machines(old: dict[str, Any], new: dict[str, Any]) -> str:
    devices = {side: r.get("meta", {}).get("device", "?") for side, r in (("old", old), ("new", new))}
    same = "same device" if devices["old"] == devices["new"] else "DIFFERENT devices: timings do not compare"
    return f"old: {devices['old']}; new: {devices['new']} ({same})\n"


def latency_table(old: dict[str, Any], new: dict[str, Any]) -> Table:
    """Ours old and new with their spread; the baseline's own ratio shows the run-to-run noise."""
    table = Table("Latency, median (seconds): old tree against new",
                  ["workload", "ours old", "ours new", "new / old", "ours spread old; new", "baseline old",
                   "baseline new", "baseline new / old", "warm-up s old; new"])  # fmt: skip
    old_v, new_v = old.get("values", {}), new.get("values", {})
    for key in [k for k in old_v if k.startswith("latency/")] + [
        k for k in new_v if k.startswith("latency/")
    ]:
        if key in old_v and key in new_v and key.split("/", 1)[1] not in [r[0] for r in table.rows]:
            a, b = old_v[key], new_v[key]
            table.add(key.split("/", 1)[1], a["ours"]["median"], b["ours"]["median"],
                      f"{b['ours']['median'] / a['ours']['median']:.3f}", f"{_spread(a)}; {_spread(b)}",
                      a["baseline"]["median"], b["baseline"]["median"],
                      f"{b['baseline']['median'] / a['baseline']['median']:.3f}",
                      f"{_fmt(a.get('compile_warmup_s'))}; {_fmt(b.get('compile_warmup_s'))}")  # fmt: skip
    return table


def _spread(latency: dict[str, Any]) -> str:
    ours = latency["ours"]
    return f"{ours['min']:.3f}–{ours['max']:.3f}"


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.1f}"


def agreement_table(old: dict[str, Any], new: dict[str, Any]) -> Table:
    """Each tree's same-seed differences (ours fast against ours eager and the baseline), for the pairs both ran."""
    table = Table("Same seed: max |pixel diff| in each tree (0 = identical)", ["pair", "old", "new"])
    old_v, new_v = old.get("values", {}), new.get("values", {})
    for key in [k for k in new_v if k.startswith("agreement/")]:
        table.add(key.split("/", 1)[1], _max(old_v.get(key)), _max(new_v.get(key)))
    return table


def _max(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not run"
    if row.get("max") is None:
        return "same text" if row.get("identical") else "other text"
    return f"{row['max']:.4f}"


def outputs_table(old: dict[str, list[str]], new: dict[str, list[str]]) -> Table:
    """The probe's outputs, call by call: identical in both trees or not."""
    table = Table("Same seed, same output: tool calls through the public API, old tree against new",
                  ["tool", "call", "old sha256", "new sha256", "identical"])  # fmt: skip
    same = 0
    for tool in [t for t in CALLS if t in old or t in new]:
        for i, label in enumerate(("1st (eager)", "2nd (captures graphs)", "3rd (replays)")):
            a = (old.get(tool) or [None] * 3)[i]
            b = (new.get(tool) or [None] * 3)[i]
            identical = a is not None and a == b and not a.startswith("error")
            same += identical
            table.add(tool, label, (a or "not run")[:16], (b or "not run")[:16], "yes" if identical else "NO")
    table.note = f"{same} of {len(table.rows)} calls gave the same output in both trees."
    return table


if __name__ == "__main__":
    main()
