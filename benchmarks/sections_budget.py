"""The budget section: every tool under a VRAM budget on one GPU, taking turns (LRU offload to CPU memory)."""

from __future__ import annotations

import os
import tempfile

from . import inputs
from .context import Run
from .measure import (
    ProcessMemory,
    Table,
    allocated_mb,
    free_cached,
    peak_mb,
    peak_reserved_mb,
    reserved_mb,
    reset_peak,
    seconds,
)


def budget(run: Run) -> None:
    """Two passes over every tool with ``--max-vram DEVICE=8GiB``: the first loads, the second swaps back in."""
    s = run.settings
    run.orchestrator = run.session = run.baseline = None  # everything else leaves the GPU first
    free_cached()
    orch = run.new_orchestrator(max_vram=f"{s.device}={s.budget}")
    session = orch.new_session(folder=tempfile.mkdtemp(prefix="vo-budget-"))
    images = inputs.uploads(session, s.size)
    tools = {t.card: t for t in reversed(list(orch.tools.values()))}
    order = [c for c in inputs.CARD_ORDER if c in tools]
    timings: dict[str, list[tuple[float, float, str | None]]] = {card: [] for card in order}
    memory: dict[str, list[tuple[float, float, float, int]]] = {card: [] for card in order}
    overall_peak = overall_reserved = 0.0
    with ProcessMemory() as sampler:  # this process and the compile helper, as the GPU sees them
        for _ in range(2):
            for card in order:
                tool = tools[card]
                state = _state(orch, card)
                reset_peak()
                swap_s, _ = seconds(lambda c=card: _touch(orch, c))
                call_s, call = seconds(
                    lambda t=tool, i=images: session.call_tool(t.name, inputs.tool_args(t, i, s.size))
                )
                if call.images and not call.error:
                    images[tool.name] = call.images[0]
                timings[card].append((swap_s, call_s, call.error, state))
                # what the allocator saw against what the manager counts as resident (weights)
                memory[card].append(
                    (peak_mb(), peak_reserved_mb(), allocated_mb(), orch.manager.resident_mb(s.device))
                )
                overall_peak = max(overall_peak, memory[card][-1][0])
                overall_reserved = max(overall_reserved, memory[card][-1][1])
    table = Table(f"Budget mode: all {len(order)} tools on {s.device} with --max-vram {s.device}={s.budget}",
                  ["card", "1st: load s", "1st: call s", "2nd: state before", "2nd: swap-in s", "2nd: call s",
                   "error"],
                  note="Each pass calls every tool once, in the order below; between two uses of a card the "
                       "others push it out (LRU, offloaded to CPU memory), so the second pass shows swap-in "
                       "times. Composite tools swap their dependencies in during the call.")  # fmt: skip
    for card, ((load1, call1, err1, _), (swap2, call2, err2, state2)) in timings.items():
        table.add(card, load1, call1, state2, swap2, call2, (err1 or err2 or "")[:80])
    mem = Table(f"Budget mode: memory per call on {s.device} (MB; budget {s.budget})",
                ["card", "1st: peak", "1st: peak reserved", "1st: held after", "1st: weights", "2nd: peak",
                 "2nd: peak reserved", "2nd: held after", "2nd: weights"],
                note="peak = most memory allocated during the call (swap-in included), peak reserved = the most "
                     "torch's allocator held from the GPU meanwhile; held after = allocated once it returned; "
                     "weights = what the model manager counts as resident.")  # fmt: skip
    for card, rows in memory.items():
        mem.add(card, *(v for row in rows for v in row))
    run.value("budget_peak_allocated_mb", overall_peak)
    run.value("budget_peak_reserved_mb", overall_reserved)
    run.value("budget_reserved_mb", reserved_mb())
    # nvidia-smi's view: CUDA contexts included, and the compile helper, which runs inside the budget too
    run.value("budget_peak_gpu_processes_mb", sampler.peak_total)
    run.value("budget_peak_by_process_mb", {("this process" if pid == str(os.getpid()) else f"pid {pid}"): mb
                                            for pid, mb in sampler.peak_by_pid.items()})  # fmt: skip
    run.value("budget_errors", sum(1 for t in timings.values() for _, _, e, _ in t if e))
    run.value("budget_swap_in_s", {card: t[1][0] for card, t in timings.items()})
    run.table(table)
    run.table(mem)


def _state(orch: object, card: str) -> str:
    return next((m.state for m in orch.manager.status() if m.card == card), "?")


def _touch(orch: object, card: str) -> None:
    with orch.manager.use(card):
        pass
