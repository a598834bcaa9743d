"""Timing, GPU memory and tables: the small tools every benchmark section uses."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

MB = 2**20


def cuda() -> Any:
    """torch.cuda when a GPU is there, else None (the CPU smoke run measures time only)."""
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def sync() -> None:
    if cuda():
        cuda().synchronize()


def allocated_mb() -> float:
    return cuda().memory_allocated() / MB if cuda() else 0.0


def reserved_mb() -> float:
    return cuda().memory_reserved() / MB if cuda() else 0.0


def reset_peak() -> None:
    if cuda():
        sync()
        cuda().reset_peak_memory_stats()


def peak_mb() -> float:
    return cuda().max_memory_allocated() / MB if cuda() else 0.0


def peak_reserved_mb() -> float:
    return cuda().max_memory_reserved() / MB if cuda() else 0.0


def free_cached() -> None:
    gc.collect()
    if cuda():
        cuda().empty_cache()


class ProcessMemory:
    """Samples, every ``every`` seconds in a thread, the GPU memory each process holds as nvidia-smi sees it
    (CUDA contexts and other processes, such as the compile helper, included): ``peak_total`` and ``peak_by_pid``
    in MB. Without nvidia-smi it records nothing."""

    def __init__(self, every: float = 0.25):
        import threading

        self.every, self.peak_total, self.peak_by_pid = every, 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import shutil
        import subprocess

        exe = shutil.which("nvidia-smi")
        query = [exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        while exe and not self._stop.wait(self.every):
            try:
                lines = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout.splitlines()
            except (OSError, subprocess.SubprocessError):
                continue
            used = {}
            for line in lines:
                pid, _, mb = line.partition(",")
                if mb.strip().isdigit():
                    used[pid.strip()] = int(mb)
            self.peak_total = max(self.peak_total, sum(used.values()))
            for pid, mb in used.items():
                self.peak_by_pid[pid] = max(self.peak_by_pid.get(pid, 0), mb)


def seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call, the device's queued work included."""
    sync()
    started = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - started, result


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median (and spread) of ``repeats`` timed calls after ``warmup`` untimed ones."""
    first = [seconds(fn)[0] for _ in range(warmup)]
    times = [seconds(fn)[0] for _ in range(max(1, repeats))]
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times),
            "first": first[0] if first else float("nan")}  # fmt: skip


@contextmanager
def memory_delta() -> Any:
    """``with memory_delta() as d:`` then d["resident_mb"] (allocated after - before) and d["peak_mb"]."""
    out: dict[str, float] = {}
    free_cached()
    before = allocated_mb()
    reset_peak()
    yield out
    sync()
    out["resident_mb"] = allocated_mb() - before
    out["peak_mb"] = peak_mb() - before


@dataclass
class Table:
    title: str
    columns: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    note: str = ""

    def add(self, *row: Any) -> None:
        self.rows.append(row)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows],
                "note": self.note}  # fmt: skip


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "–"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "–" if value is None else str(value)
