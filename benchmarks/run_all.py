"""The whole benchmark in one run: the project against the TaskMatrix way, side by side, on one GPU.

Builds full-size random checkpoints (benchmarks/weights.py), then measures VRAM per card and for the
whole tool set, latency, same-seed agreement, cold start, first calls, budget mode and (CPU only, when
LangChain is installed) the orchestrator's own overhead. Prints a table per section, and with --json and
--out writes every number and a markdown report. A section that fails is reported and the run goes on.
docs/benchmarks.md says what each section measures and holds the current tables.

    python -m benchmarks.run_all --model-dir /tmp/weights --json results.json --out report.md
    python -m benchmarks.run_all --tiny --out /tmp/bench.md        # the CPU smoke run (tests/)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from . import (
    overhead,
    sections_agreement,
    sections_budget,
    sections_fast,
    sections_load,
    sections_modes,
    sections_speed,
    sections_variants,
)
from .context import Run, Settings
from .report import render

log = logging.getLogger(__name__)

SECTIONS: dict[str, Callable[[Run], None]] = {
    "weights": sections_load.weights,
    "cold_start": sections_load.cold_start,
    "ours": sections_load.ours_per_card,
    "baseline": sections_load.baseline_load,
    "latency": sections_speed.latency,
    "agreement": sections_agreement.agreement,
    "variants": sections_variants.variants,
    "int8": sections_fast.int8,
    "restart": sections_fast.restart,
    "compiled_file": sections_modes.compiled_file,
    "draft": sections_modes.draft,
    "fp8": sections_modes.fp8,
    "budget": sections_budget.budget,
    "overhead": overhead.section,
}
NEEDS = {"latency": ("ours", "baseline"), "agreement": ("ours", "baseline"), "variants": ("ours", "baseline")}


def meta(settings: Settings, models: bool = True) -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    gpu = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"none (CPU: {platform.processor() or '?'})"
    )
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": gpu,
            "torch": torch.__version__, "CUDA": str(torch.version.cuda), "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "weights": "tiny (smoke run)" if settings.tiny else "full-size, random, fp16" if models else "none"}  # fmt: skip


def run_sections(run: Run, names: list[str]) -> None:
    done: set[str] = set()
    for name in names:
        missing = [n for n in NEEDS.get(name, ()) if n not in done]
        if missing:
            run.results["errors"][name] = f"skipped: needs {', '.join(missing)}"
            continue
        print(f"\n== {name} ({run.settings.left():.0f} s left)", flush=True)
        started = time.perf_counter()
        try:
            SECTIONS[name](run)
            done.add(name)
        except Exception as exc:  # one broken section must not cost the others
            traceback.print_exc()
            run.results["errors"][name] = (
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            )
        run.value(f"section_s/{name}", time.perf_counter() - started)
        run.save()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, help="full-size checkpoints, DIR/org/name (built if missing)")
    p.add_argument("--tiny", action="store_true", help="tiny checkpoints and sizes (CPU smoke run)")
    p.add_argument("--device", default=None, help="cuda:0 (default when a GPU is there) or cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per latency measurement")
    p.add_argument("--budget", default="8GiB", help="the --max-vram of the budget-mode section")
    p.add_argument("--time-limit", type=float, default=540, help="seconds; optional work is skipped near it")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, in order")
    p.add_argument("--cards", default="", help="only these cards (comma-separated) and their dependencies")
    p.add_argument("--no-compile", action="store_true",
                   help="latency of graphs of the eager forward: no background compile, no warm-up to wait for")  # fmt: skip
    p.add_argument(
        "--save-images", type=Path, default=None, help="the agreement section's outputs as PNG here"
    )
    p.add_argument("--out", type=Path, default=None, help="a markdown report of this run")
    p.add_argument("--json", type=Path, default=None, help="every number, as JSON")
    return p


def settings_from(args: argparse.Namespace, error: Callable[[str], None]) -> Settings:
    import torch

    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        from orchestrator.weights import cache_root

        model_dir = cache_root() / "tiny"
    elif args.model_dir is None:
        error("--model-dir is required for full-size weights (or pass --tiny)")
    else:
        model_dir = args.model_dir
    return Settings(model_dir, device, args.tiny, args.repeats, args.budget, time.monotonic() + args.time_limit,
                    args.json, tuple(c for c in args.cards.split(",") if c), not args.no_compile,
                    args.save_images)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet_libraries()
    run = Run(settings_from(args, p.error))
    command = "python -m benchmarks.run_all " + " ".join(argv if argv is not None else sys.argv[1:])
    names = [n.strip() for n in args.sections.split(",") if n.strip()]
    run.results["meta"] = {**meta(run.settings, models=names != ["overhead"]), "command": command}
    run.value("budget", args.budget)
    run_sections(run, names)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render({**run.results, "meta": [run.results["meta"]]}, command), encoding="utf-8")
    run.save()
    return run.results


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except (ImportError, AttributeError):
        pass


if __name__ == "__main__":
    main()
