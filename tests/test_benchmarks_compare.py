"""benchmarks.compare's side-by-side report, from results files as two trees' runs leave them (no GPU, no run)."""

from __future__ import annotations

import json

from benchmarks.compare import report

LATENCY = "latency/Text2Image 512², 20 steps"


def timing(ours: float, baseline: float) -> dict:
    def spread(median: float) -> dict:
        return {"median": median, "min": median, "max": median, "n": 3}

    return {"ours": spread(ours), "baseline": spread(baseline), "compile_warmup_s": None}


def write(folder, name, data):
    (folder / name).write_text(json.dumps(data))


def test_report_puts_latency_side_by_side_and_flags_a_changed_output(tmp_path):
    device = {"meta": {"device": "NVIDIA H100"}}
    write(tmp_path, "old.json", {**device, "values": {LATENCY: timing(0.200, 1.00)}})
    write(tmp_path, "new.json", {**device, "values": {LATENCY: timing(0.180, 1.00),
          "agreement/Text2Image: ours fast vs baseline": {"max": 0.003, "identical": False}}})  # fmt: skip
    write(tmp_path, "old-probe.json", {"text2image": ["a", "b", "c"]})
    write(tmp_path, "new-probe.json", {"text2image": ["a", "b", "x"]})
    text = report(tmp_path)
    assert "(same device)" in text
    assert "| Text2Image 512², 20 steps | 0.200 | 0.180 | 0.900 |" in text
    assert "| Text2Image: ours fast vs baseline | not run | 0.0030 |" in text
    assert "2 of 3 calls gave the same output in both trees." in text
    assert "| text2image | 3rd (replays) | c | x | NO |" in text


def test_report_says_when_the_two_runs_had_different_devices(tmp_path):
    write(tmp_path, "old.json", {"meta": {"device": "NVIDIA H100"}, "values": {}})
    write(tmp_path, "new.json", {"meta": {"device": "NVIDIA H200"}, "values": {}})
    assert "DIFFERENT devices" in report(tmp_path)
