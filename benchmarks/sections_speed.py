"""The latency section: ours (fast path, and eager for reference) against the baseline, median of N calls."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import baseline as tm
from . import fastpath
from .context import Run, Settings
from .inputs import INSTRUCTION, NEGATIVE, PROMPT, QUESTION, SEED, photo
from .measure import Table, median_seconds

log = logging.getLogger(__name__)
SCHEDULER = "UniPCMultistepScheduler"  # the project's default for Text2Image and the ControlNets
NOTE = ("Same weights, scheduler, steps, guidance and seed on both sides. 'ours' is the default: CUDA-graph "
        "replay of the compiled UNet, ControlNet and VAE decoder, timed once the background compile is done "
        "(with --no-compile: graphs of the eager forward); for BLIP, greedy decoding with a static KV cache and "
        "a CUDA graph replayed per token. 'ours eager' is --no-fast. The warm-up is the time from a tool's "
        "first call until its compiled graphs are ready; the calls meanwhile replay graphs of the eager forward.")  # fmt: skip


@dataclass
class Workload:
    label: str
    card: str
    ours: Callable[[Any], Any]  # takes the loaded model
    baseline: Callable[[], Any]


def workloads(run: Run) -> list[Workload]:
    """The timed calls, the same work on both sides (the baseline gets the project's scheduler)."""
    s, base = run.settings, run.baseline.tools
    size, (short, long) = s.size, s.steps
    picture, condition = photo(size), photo(size).convert("L").convert("RGB")
    same_scheduler(run)
    tokens = {n: blip_tokens(run, n) for n in ("ImageCaptioning", "VisualQuestionAnswering")}
    return [
        Workload(f"Text2Image {size}², {short} steps", "Text2Image",
                 lambda m: m.generate(PROMPT, NEGATIVE, size, size, short, 7.5, SEED),
                 lambda: tm.text2image(base["Text2Image"], PROMPT, NEGATIVE, short, SEED, size)),
        Workload(f"Text2Image {size}², {long} steps", "Text2Image",
                 lambda m: m.generate(PROMPT, NEGATIVE, size, size, long, 7.5, SEED),
                 lambda: tm.text2image(base["Text2Image"], PROMPT, NEGATIVE, long, SEED, size)),
        Workload(f"ControlNet (canny) {size}², {short} steps", "CannyText2Image",
                 lambda m: m.generate(condition, PROMPT, NEGATIVE, short, 7.5, SEED),
                 lambda: tm.controlnet(base["CannyText2Image"], condition, PROMPT, NEGATIVE, short, SEED)),
        Workload(f"InstructPix2Pix {size}², {short} steps", "InstructPix2Pix",
                 lambda m: m.edit(picture, INSTRUCTION, short, 7.5, 1.2, SEED),
                 lambda: tm.pix2pix(base["InstructPix2Pix"], picture, INSTRUCTION, short, SEED)),
        Workload("BLIP caption", "ImageCaptioning", lambda m: m.caption(picture),
                 lambda: tm.blip(base["ImageCaptioning"], picture, None, tokens["ImageCaptioning"])),
        Workload("BLIP VQA", "VisualQuestionAnswering", lambda m: m.answer(picture, QUESTION),
                 lambda: tm.blip(base["VisualQuestionAnswering"], picture, QUESTION,
                                 tokens["VisualQuestionAnswering"])),
    ]  # fmt: skip


def same_scheduler(run: Run) -> None:
    """The project's scheduler on the baseline's Text2Image and ControlNet pipelines, so both run one sampler."""
    for name in ("Text2Image", "CannyText2Image"):
        if name in run.baseline.tools:
            options = run.orchestrator.card_options(name)
            tm.use_scheduler(run.baseline.tools[name], options.get("scheduler", SCHEDULER))


def blip_tokens(run: Run, card: str) -> int:
    """The card's token budget, which the baseline's ``generate`` gets too."""
    return int(run.orchestrator.card_options(card).get("max_new_tokens", 30))


def latency(run: Run) -> None:
    """Median of N calls per workload, ours against the baseline, on the cards both sides loaded."""
    s = run.settings
    table = Table(f"Latency, median of {s.repeats} (seconds)",
                  ["workload", "baseline", "ours eager", "ours", "speed-up", "ours: compile warm-up s"],
                  note=NOTE)  # fmt: skip
    for work in workloads(run):
        if work.card not in run.baseline.tools:
            continue
        ours, eager, warmup = _time_ours(run, work)
        reference = median_seconds(work.baseline, s.repeats, s.warmup)
        ratio = reference["median"] / ours["median"]
        run.value(f"latency/{work.label}", {"baseline": reference, "ours": ours, "ours_eager": eager,
                                             "speedup": ratio, "compile_warmup_s": warmup})  # fmt: skip
        table.add(work.label, reference["median"], eager, ours["median"], f"{ratio:.1f}×", warmup)
    run.table(table)


def _time_ours(run: Run, work: Workload) -> tuple[dict[str, float], float | None, float | None]:
    """(ours timed, ours eager median or None, compile warm-up seconds or None) for one workload."""
    s = run.settings
    with run.orchestrator.manager.use(work.card) as model:
        call = lambda: work.ours(model)  # noqa: E731
        fast = getattr(model, "fast", None)
        compiles = bool(fast) and hasattr(model, "compile")  # BLIP's fast path compiles nothing
        if compiles:
            model.compile = s.compile  # the per-card section ran without it
        warmup = compile_warmup(call, s, run.orchestrator) if compiles and s.compile else None
        ours = median_seconds(call, s.repeats, s.warmup)
        eager = None
        if fast is not None and (s.left() > 120 or "50" not in work.label):  # eager 50 steps is optional
            model.fast = False
            eager = median_seconds(call, s.repeats, s.warmup)["median"]
            model.fast = fast
    return ours, eager, warmup


def compile_warmup(
    call: Callable[[], Any], s: Settings, orchestrator: Any, limit: float = 420
) -> float | None:
    """Seconds from a tool's first call until the background compiler is done with what it queued (the
    second call captures the eager graphs and queues the compile); None when nothing was queued."""
    started = time.perf_counter()
    call()
    call()
    if not fastpath.compiles_pending(orchestrator):
        return None
    if not fastpath.wait_for_compiles(orchestrator, max(30.0, min(limit, s.left() - 60))):
        log.warning("the background compile did not finish in time; timing what is ready")
    return time.perf_counter() - started
