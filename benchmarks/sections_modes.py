"""Sections for issue 25's opt-in modes and restarts: the compiled-code file, the draft card and --fp8.

``compiled_file``: new processes, each with an empty inductor and Triton cache. The first compiles cold and
writes the compiled-code file (what ``warmup`` does as it ends); the second is a new machine given that file; the
third is given the same file without its regions compiled ahead (torch's mega-cache alone: dynamo traces every
region again). Each reports the seconds from its first Text2Image call until a call has run on compiled graphs.

``draft``: Text2Image at its default 20 steps beside Text2ImageDraft (LCM-LoRA, 4 steps, guidance 1), same seed;
and whether default pictures are pixel-identical before and after the draft card ran.

``fp8``: Text2Image default beside ``--fp8`` (torchao float8 matmuls), same seed: graphs of the eager forward,
then (time allowing) the compiled forward, where the casts are fused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from . import fastpath
from .context import Run
from .inputs import NEGATIVE, PROMPT, SEED
from .measure import Table, free_cached, median_seconds
from .sections_fast import RESTART_HEAD, restart_code, run_restart

RESTART = (
    RESTART_HEAD
    + """    calls, state, first = 0, "eager", None
    while calls < {max_calls}:
        state = model.compile_state  # what the next call runs: compiled graphs once this says so
        started = time.perf_counter()
        model.generate({prompt!r}, {negative!r}, {size}, {size}, {steps}, 7.5, {seed})
        calls += 1
        first = first or started
        if state == "compiled":
            break
        if model.compile_state == "compiling":
            fastpath.wait_for_compiles(orch, 600)
    done = time.perf_counter()
    from torch._dynamo.utils import counters
    traced = counters["stats"]["unique_graphs"]  # graphs dynamo traced in this process until then
    saved = orch.fastpath.save_compiled({device!r}) if {save} else None
    save_s = time.perf_counter() - done
print(json.dumps({{"start_s": t1 - t0, "load_s": t1 - t_made, "to_compiled_s": done - first, "calls": calls,
                  "compiled": state == "compiled", "save_s": save_s, "traced": traced,
                  "saved": saved.path if saved is not None and saved.done else None,
                  "saved_message": saved.message if saved is not None else None}}))
"""
)


def _restart_process(
    run: Run, cache: str, compiled: str | None, save: bool, file_first: bool = False
) -> dict[str, Any]:
    # file_first: the file loads before the model, not in the thread beside its load (the two share the CPU)
    before = f"orch.fastpath.load_compiled({run.settings.device!r})" if file_first else ""
    code = restart_code(RESTART, run, save=save, max_calls=3 if run.settings.tiny else 12, before=before)
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    env.update(VISUAL_ORCHESTRATOR_CACHE=cache, TRITON_CACHE_DIR=os.path.join(cache, "triton"))
    env.pop("VISUAL_ORCHESTRATOR_COMPILED", None)
    if compiled:
        env["VISUAL_ORCHESTRATOR_COMPILED"] = compiled
    return run_restart(run, code, env, keep=12)


def _without_regions(path: str, folder: str) -> str:
    """A copy of a compiled-code file with torch's mega-cache alone (no regions compiled ahead)."""
    from foundation_models.fastpath.artifacts import MAGIC, read

    header, cache, _ = read(Path(path))
    header = {**header, "regions": [], "cache_bytes": len(cache), "bytes": len(cache),
              "sha256": hashlib.sha256(cache).hexdigest()}  # fmt: skip
    copy = Path(folder) / "mega-cache-only.bin"
    copy.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + cache)
    return str(copy)


def compiled_file(run: Run) -> None:
    """Cold compile (empty caches) against a new machine given the compiled-code file: seconds to compiled."""
    with (
        tempfile.TemporaryDirectory(prefix="vo-cold-") as cold,
        tempfile.TemporaryDirectory(prefix="vo-new-") as new,
        tempfile.TemporaryDirectory(prefix="vo-mega-") as mega,
        tempfile.TemporaryDirectory(prefix="vo-first-") as file_first,
    ):
        first = _restart_process(run, cold, None, save=True)
        second = _restart_process(run, new, first["saved"], save=False) if first["saved"] else None
        serial = None
        if first["saved"] and run.settings.left() > 90:
            serial = _restart_process(run, file_first, first["saved"], save=False, file_first=True)
        third = None
        if first["saved"] and run.settings.left() > 60:
            third = _restart_process(run, mega, _without_regions(first["saved"], mega), save=False)
        size = os.path.getsize(first["saved"]) / 2**20 if first["saved"] else float("nan")
    run.value(
        "compiled_file",
        {"cold": first, "with_file": second, "file_first": serial, "mega_cache_only": third, "file_mb": size},
    )
    table = Table("Restart to compiled: Text2Image in a new process with empty inductor and Triton caches",
                  ["process", "start to model loaded s", "of it, loading s", "first call to a compiled call done s",
                   "calls", "compiled", "graphs dynamo traced"],
                  note=f"Cold: no compiled-code file (a first start). With the file: a new machine given the "
                       f"{size:.0f} MB file the cold process wrote (warmup writes the same), same GPU model and "
                       "torch. The calls before the compiled one replay graphs of the eager forward. Writing the "
                       f"file took {first.get('save_s', float('nan')):.1f} s after the cold process's last call "
                       "(the regions compiled ahead included). Loading: after imports and the Orchestrator, the "
                       "model's load (and the file's, where it loads first).")  # fmt: skip
    rows = (("cold: compiles", first), ("with the compiled-code file (loads beside the model)", second),
            ("the same, the file loaded before the model", serial),
            ("the file without its regions compiled ahead (mega-cache only)", third))  # fmt: skip
    for label, row in rows:
        if row is not None:
            compiled = "yes" if row["compiled"] else "no"
            seconds_ = (row["start_s"], row["load_s"], row["to_compiled_s"])
            table.add(label, *seconds_, row["calls"], compiled, row["traced"])
    run.table(table)


def draft(run: Run) -> None:
    """Text2Image (default steps) against Text2ImageDraft (4 steps): seconds, same-seed difference, defaults kept."""
    import numpy as np

    s = run.settings
    plain = run.new_orchestrator(compile=False)
    before, timing = _default(plain, s)
    plain.manager.free_memory([s.device])
    del plain
    free_cached()
    orch = run.new_orchestrator(compile=False)
    with orch.manager.use("Text2ImageDraft") as model:
        steps = int(orch.card_options("Text2ImageDraft").get("num_inference_steps", 4))
        guidance = float(orch.card_options("Text2ImageDraft").get("guidance_scale", 1.0))
        call = lambda m=model: m.generate(PROMPT, NEGATIVE, s.size, s.size, steps, guidance, SEED)  # noqa: E731
        drafted = np.asarray(call(), dtype=np.float32) / 255.0
        draft_timing = median_seconds(call, s.repeats, s.warmup)
    after, _ = _default(orch, s, repeats=0)
    orch.manager.free_memory([s.device])
    del orch, model
    free_cached()
    same = bool(np.array_equal(before, after))
    diff = np.abs(drafted - before)
    table = Table(f"Draft mode: Text2Image {s.size}², graphs of the eager forward, median of {s.repeats}",
                  ["card", "steps", "guidance", "median s", "speed-up", "pixels vs default: mean |diff|"],
                  note="Same prompt and seed. Random weights, so the pictures are noise: the difference says how "
                       "far a 4-step LCM draft lands from the 20-step picture numerically, not how it looks. "
                       f"Default pictures after the draft card ran: {'identical' if same else 'CHANGED'}.")  # fmt: skip
    table.add("Text2Image", s.steps[0], 7.5, timing["median"], "1.00×", 0.0)
    table.add("Text2ImageDraft", steps, guidance, draft_timing["median"],
              f"{timing['median'] / draft_timing['median']:.2f}×", float(diff.mean()))  # fmt: skip
    run.table(table)
    run.value("draft", {"default": timing, "draft": draft_timing, "steps": steps, "default_unchanged": same,
                        "pixel_mean_diff": float(diff.mean())})  # fmt: skip


def _default(orch: Any, s: Any, repeats: int | None = None) -> tuple[Any, dict[str, float]]:
    import numpy as np

    with orch.manager.use("Text2Image") as model:
        call = lambda m=model: m.generate(PROMPT, NEGATIVE, s.size, s.size, s.steps[0], 7.5, SEED)  # noqa: E731
        image = np.asarray(call(), dtype=np.float32) / 255.0
        timing = (
            median_seconds(call, s.repeats if repeats is None else repeats, s.warmup) if repeats != 0 else {}
        )
    return image, timing


def fp8(run: Run) -> None:
    """Text2Image fp16 against --fp8: median seconds (eager-forward graphs, then compiled) and pixel difference."""
    import numpy as np

    from foundation_models.fp8 import unsupported

    s = run.settings
    reason = unsupported(s.device)
    table = Table(f"--fp8: Text2Image {s.size}², {s.steps[0]} steps, median of {s.repeats}",
                  ["weights", "forward", "median s", "speed-up", "pixels vs fp16: mean |diff|", "max |diff|"],
                  note=reason or "Same prompt and seed; the fp16 row of each forward is the baseline of the row "
                                 "below it. Compiled: the fast path's background torch.compile of the UNet's "
                                 "blocks, waited for.")  # fmt: skip
    if reason:
        run.table(table)
        run.value("fp8", {"skipped": reason})
        return
    results: dict[str, Any] = {}
    for compiled in (False, True):
        if compiled and s.left() < 240:
            results["compiled"] = "skipped: too little time left"
            break
        images, timing = {}, {}
        for on in (False, True):
            orch = run.new_orchestrator(
                load=f"Text2Image_{s.device}", fp8=on, compile=compiled
            )  # no draft: its LoRA
            with orch.manager.use("Text2Image") as model:
                call = lambda m=model: m.generate(PROMPT, NEGATIVE, s.size, s.size, s.steps[0], 7.5, SEED)  # noqa: E731
                call()
                call()
                if compiled:
                    fastpath.wait_for_compiles(orch, max(60.0, s.left() - 60))
                images[on] = np.asarray(call(), dtype=np.float32) / 255.0
                timing[on] = median_seconds(call, s.repeats, s.warmup)
                timing[on]["compile_state"] = model.compile_state
            orch.manager.free_memory([s.device])
            del orch, model
            free_cached()
        diff = np.abs(images[True] - images[False])
        forward = "compiled" if compiled else "eager graphs"
        table.add("fp16", forward, timing[False]["median"], "1.00×", 0.0, 0.0)
        table.add("fp8", forward, timing[True]["median"], f"{timing[False]['median'] / timing[True]['median']:.2f}×",
                  float(diff.mean()), float(diff.max()))  # fmt: skip
        results[forward] = {"fp16": timing[False], "fp8": timing[True], "pixel_mean_diff": float(diff.mean()),
                            "pixel_max_diff": float(diff.max())}  # fmt: skip
    run.table(table)
    run.value("fp8", results)
