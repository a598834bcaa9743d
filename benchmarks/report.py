"""A markdown report from one or more results files: the summary against the goals, then every table.

run_all writes one for its own run (--out); this merges several, e.g. a GPU run and the CPU-only overhead run:

    python -m benchmarks.report results-gpu.json results-cpu.json --out report.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from orchestrator.spec import parse_size_mb

from .measure import Table, fmt

GOALS = (
    "Goals are the issue's: whole set ≤ 0.3× the baseline's VRAM, diffusion ≥ 5× faster, cold start ≤ 0.1×."
)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"meta": [], "values": {}, "tables": [], "cards": {}, "groups": {}, "errors": {}}
    for r in results:
        out["meta"].append(r.get("meta", {}))
        for key in ("values", "cards", "groups", "errors"):
            out[key].update(r.get(key, {}))
        for table in r.get("tables", []):  # a later run's table replaces an earlier one of the same title
            titles = [t["title"] for t in out["tables"]]
            if table["title"] in titles:
                out["tables"][titles.index(table["title"])] = table
            else:
                out["tables"].append(table)
    return out


class Summary(Table):
    """The headline table: each measure ours against the baseline, with the issue's goal."""

    def row(
        self, label: str, base: Any, ours: Any, goal: str, met: bool | None, ratio: str | None = None
    ) -> None:
        if base is None or ours is None:
            return
        shown = ratio or (f"{ours / base:.2f}×" if base else "–")
        self.add(label, base, ours, shown, goal, {True: "yes", False: "no", None: "–"}[met])

    def ours_only(self, label: str, value: Any, goal: str, met: bool | None) -> None:
        self.add(label, "–", value, "–", goal, {True: "yes", False: "no", None: "–"}[met])


def summary(r: dict[str, Any]) -> Table:
    table = Summary("Summary: ours against the TaskMatrix way",
                    ["measure", "baseline", "ours", "ours / baseline", "goal", "met"])  # fmt: skip
    for rows in (_vram_rows, _latency_rows, _warmup_rows, _cold_start_rows, _budget_rows):
        rows(table, r)
    if "overhead" in r["values"]:
        ms = r["values"]["overhead"]["median_ms"]
        table.ours_only("Orchestrator overhead per turn (ms)", ms, "≤ 5 ms", ms <= 5)
    return table


def _vram_rows(table: Summary, r: dict[str, Any]) -> None:
    """The whole set and Text2Image with every ControlNet; the baseline holds one SD1.5 base per pipeline."""
    v = r["values"]
    base_mb, ours_mb = v.get("baseline_resident_mb"), v.get("ours_weights_mb")
    if base_mb and ours_mb is not None:
        table.row("VRAM, whole tool set resident (MB)", base_mb, ours_mb, "≤ 0.3×", ours_mb / base_mb <= 0.3)
    sd = sum(r.get("groups", {}).get("sd15_base", {}).values())
    controlnets = [c["resident_mb"] for n, c in r.get("cards", {}).items()
                   if n.endswith("Text2Image") and n != "Text2Image"]  # fmt: skip
    if not (sd and controlnets):
        return
    n = len(controlnets)
    base, ours = (n + 1) * sd + sum(controlnets), sd + sum(controlnets)
    table.row(f"VRAM, Text2Image + {n} ControlNets (MB, from the sizes above)", base, ours, "≤ 0.3×",
              ours / base <= 0.3)  # fmt: skip
    if "int8" not in v or not (base_mb and ours_mb):
        return
    saved = {card: mb["fp16"] - mb["int8"] for card, mb in v["int8"]["sizes"].items()}
    per_controlnet = saved.get("CannyText2Image", 0.0)  # the canny ControlNet's saving counted for each
    whole = ours_mb - per_controlnet * n - sum(saved.get(c, 0.0) for c in ("Text2Image", "InstructPix2Pix",
                                                                           "Inpainting"))  # fmt: skip
    table.row("VRAM, whole tool set resident, --int8-weights (MB; the fp16 set minus measured savings)", base_mb,
              whole, "≤ 0.3×", whole / base_mb <= 0.3)  # fmt: skip
    ours = sd + sum(controlnets) - saved.get("Text2Image", 0.0) - per_controlnet * n
    table.row(
        f"VRAM, Text2Image + {n} ControlNets, --int8-weights (MB)", base, ours, "≤ 0.3×", ours / base <= 0.3
    )


def _latency_rows(table: Summary, r: dict[str, Any]) -> None:
    for key, value in r["values"].items():
        if key.startswith("latency") and "/" in key:  # "latency/X", or "latency (another machine)/X"
            tag, label = key.split("/", 1)
            label += tag[len("latency") :]
            speedup = value["speedup"]
            shown = f"{speedup:.1f}× faster" if speedup >= 1.05 else f"{speedup:.2f}×"
            table.row(f"{label} (s)", value["baseline"]["median"], value["ours"]["median"], "≥ 5× faster",
                      speedup >= 5, shown)  # fmt: skip


def _warmup_rows(table: Summary, r: dict[str, Any]) -> None:
    v = r["values"]
    colds = {k.split("/", 1)[1]: x for k, x in v.items() if k.startswith("warmup_cold_s/")}
    if not colds:
        colds = {k.split("/", 1)[1]: x.get("compile_warmup_s") for k, x in v.items()
                 if k.startswith("latency/Text2Image") and x.get("compile_warmup_s") is not None}  # fmt: skip
    for label, cold in colds.items():
        table.ours_only(f"Fast-path warm-up, {label}, cold inductor cache (s)", cold, "≤ 20 s", cold <= 20)
    for key, value in v.items():
        if key.startswith("restart") and isinstance(value, dict) and "warmup_s" in value:
            warm = value["warmup_s"]
            table.ours_only(f"Fast-path warm-up, Text2Image, after a restart{key[len('restart') :]} (s)", warm,
                            "≤ 20 s", warm <= 20)  # fmt: skip


def _cold_start_rows(table: Summary, r: dict[str, Any]) -> None:
    v = r["values"]
    base_s, imports = v.get("baseline_load_s"), v.get("baseline_import_s", 0.0)
    for label, key, base in (
        ("Cold start, new process to serving, all 27 cards (s)", "ours_cold_start_process_s", base_s and base_s + imports),
        ("Cold start, in process, imports excluded (s)", "ours_cold_start_construct_s", base_s),
    ):  # fmt: skip
        if base and key in v:
            table.row(label, base, v[key], "≤ 0.1×", v[key] / base <= 0.1)


def _budget_rows(table: Summary, r: dict[str, Any]) -> None:
    v = r["values"]
    budget = v.get("budget", "8GiB")
    if "budget_errors" in v:
        table.ours_only(
            f"Budget mode: tools failing under {budget}", v["budget_errors"], "0", v["budget_errors"] == 0
        )
    if "budget_peak_reserved_mb" in v:
        budget_mb = parse_size_mb(budget, "budget")
        for label, key in (
            ("allocated", "budget_peak_allocated_mb"),
            ("reserved by torch", "budget_peak_reserved_mb"),
        ):
            table.ours_only(f"Budget mode: peak memory {label} under {budget} (MB)", v[key], f"≤ {budget_mb:,}",
                            v[key] <= budget_mb)  # fmt: skip
    if v.get("budget_peak_gpu_processes_mb"):  # nvidia-smi: CUDA contexts and the compile helper included
        table.ours_only(f"Budget mode: peak GPU memory of our processes under {budget}, contexts and compile "
                        "helper included (MB)", v["budget_peak_gpu_processes_mb"], "–", None)  # fmt: skip


def render(r: dict[str, Any], command: str) -> str:
    lines = ["# Benchmarks", "", "Generated by `benchmarks/` — do not edit by hand.", ""]
    for meta in r["meta"]:
        if meta:
            lines.append("- " + "; ".join(f"{k}: {fmt(val)}" for k, val in meta.items()))
    lines += ["", f"Command: `{command}`", "", GOALS, "", summary(r).markdown()]
    for t in r["tables"]:
        lines.append(Table(t["title"], t["columns"], t["rows"], t.get("note", "")).markdown())
    if r["errors"]:
        lines += ["### Sections that failed", ""] + [f"- {k}: {e}" for k, e in r["errors"].items()] + [""]
    lines.append(Path(__file__).with_name("METHOD.md").read_text(encoding="utf-8"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--command", default="python -m benchmarks.run_all --model-dir DIR (see each file's meta)"
    )
    args = parser.parse_args()
    merged = merge([json.loads(p.read_text()) for p in args.results])
    args.out.write_text(render(merged, args.command), encoding="utf-8")
    print(summary(merged).markdown())


if __name__ == "__main__":
    main()
