"""Sections about loading: the weights, cold start, VRAM per card and first calls, the baseline's start-up."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import baseline, inputs
from .context import Run
from .measure import Table, allocated_mb, memory_delta, seconds

REPO_ROOT = Path(__file__).resolve().parent.parent


def weights(run: Run) -> None:
    """Build the full-size random checkpoints (or the tiny ones), unless a previous run left them."""
    from .weights import build_all, repos_of_cards, size_gb

    s = run.settings
    if s.tiny:
        from orchestrator.weights import WeightResolver

        resolver = WeightResolver("tiny", cache_dir=s.model_dir.parent)
        took, _ = seconds(
            lambda: [resolver.resolve(repo) for repo in repos_of_cards(run.orchestrator_cards())]
        )
    else:
        device = "cuda" if s.device.startswith("cuda") else "cpu"
        took, _ = seconds(lambda: build_all(s.model_dir, device, names=run.orchestrator_cards()))
    run.value("weights_build_s", took)
    run.value("weights_gb", size_gb(s.model_dir))


def cold_start(run: Run) -> None:
    """Ours: from an empty process to a session that can take a turn, all 27 cards in --load."""
    s = run.settings
    model_dir = "None" if s.tiny else repr(str(s.model_dir))
    code = (
        "import time; t = time.perf_counter(); from orchestrator import Orchestrator; "
        f"o = Orchestrator({run.load_spec()!r}, weights={s.weights!r}, model_dir={model_dir}); "
        f"o.new_session(folder={tempfile.mkdtemp()!r}); print(time.perf_counter() - t)"
    )
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    run.value("ours_cold_start_process_s", time.perf_counter() - started)
    run.value("ours_cold_start_import_and_construct_s", float(out.stdout.strip().splitlines()[-1]))
    took, orch = seconds(run.new_orchestrator)
    run.value("ours_cold_start_construct_s", took)
    run.orchestrator = orch


def ours_per_card(run: Run) -> None:
    """Each shared component and each card loaded on its own, then called cold and warm."""
    from orchestrator.manager import LoadContext

    s, orch = run.settings, run.orchestrator or run.new_orchestrator(compile=False)  # latency turns it on
    run.orchestrator = orch
    session = run.session = orch.new_session(folder=tempfile.mkdtemp(prefix="vo-bench-"))
    run.images.update(inputs.uploads(session, s.size))
    start_mb = allocated_mb()
    groups = Table("Shared components (loaded once per device)", ["group/component", "resident MB", "load s"])
    used = {
        (g, c) for card in orch.plan.placements for g, comps in orch.cards[card].shares.items() for c in comps
    }
    for group in orch.cards.groups.values():
        dtype = "float32" if s.device == "cpu" else group.dtype
        ctx = LoadContext(None, s.device, dtype, orch.manager)
        for name in [c for c in group.components if (group.name, c) in used]:
            with memory_delta() as mem:
                took, _ = seconds(lambda c=ctx, g=group.name, n=name: c.component(g, n))
            run.results["groups"].setdefault(group.name, {})[name] = round(mem["resident_mb"])
            groups.add(f"{group.name}/{name}", mem["resident_mb"], took)
    run.table(groups)
    cards = Table("Per card: own VRAM, working memory, first call (load + run) and warm call",
                  ["card", "tool", "own resident MB", "working peak MB", "load s", "first run s", "warm s", "error"],
                  note="Own = what the card loads beyond the shared components above. Working peak = the most "
                       "extra memory one call took (activations, CUDA-graph pools). Default settings.")  # fmt: skip
    tools = {t.card: t for t in reversed(list(orch.tools.values()))}  # a card's first tool
    for card in [c for c in inputs.CARD_ORDER if c in tools]:
        tool = tools[card]
        with memory_delta() as load_mem:
            load_s, _ = seconds(lambda c=card: _touch(orch, c))
        args = inputs.tool_args(tool, run.images, s.size)
        with memory_delta() as run_mem:
            first_s, call = seconds(lambda t=tool.name, a=args: session.call_tool(t, a))
        warm_s, call = seconds(lambda t=tool.name, a=args: session.call_tool(t, a))
        if call.images and not call.error:
            run.images[tool.name] = call.images[0]
        record = {"tool": tool.name, "resident_mb": round(load_mem["resident_mb"]),
                  "working_mb": round(max(0.0, run_mem["peak_mb"])), "load_s": load_s, "first_run_s": first_s,
                  "warm_s": warm_s, "error": call.error}  # fmt: skip
        run.results["cards"][card] = record
        cards.add(card, tool.name, load_mem["resident_mb"], record["working_mb"], load_s, first_s, warm_s,
                  (call.error or "")[:80])  # fmt: skip
    run.table(cards)
    run.value("ours_all_resident_mb", allocated_mb() - start_mb)
    run.value("ours_weights_mb", sum(c["resident_mb"] for c in run.results["cards"].values())
              + sum(sum(g.values()) for g in run.results["groups"].values()))  # fmt: skip


def _baseline_import_seconds() -> float:
    """What a TaskMatrix-style process spends before it loads a model: Python, torch, diffusers, transformers."""
    code = (
        "import torch, diffusers, transformers; "
        "from diffusers import StableDiffusionPipeline, StableDiffusionControlNetPipeline, ControlNetModel; "
        "from transformers import BlipForConditionalGeneration, pipeline; "
        "torch.cuda.is_available() and torch.cuda.init()"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, check=True)
    return time.perf_counter() - started


def _touch(orch: object, card: str) -> None:
    with orch.manager.use(card):
        pass


def baseline_load(run: Run) -> None:
    """The baseline's start-up and VRAM: every tool loaded at start-up the TaskMatrix way."""
    s = run.settings
    names = run.orchestrator_cards()
    with memory_delta() as mem:
        took, loaded = seconds(lambda: baseline.load_all(s.model_dir, names, s.device, s.dtype))
    run.baseline = loaded
    run.value("baseline_load_s", took)
    run.value("baseline_import_s", _baseline_import_seconds())
    run.value("baseline_resident_mb", mem["resident_mb"])
    table = Table("Baseline start-up (TaskMatrix way), slowest first", ["tool", "load s"])
    for name, took in sorted(loaded.seconds.items(), key=lambda kv: -kv[1])[:8]:
        table.add(name, took)
    run.table(table)
