"""The batching benchmark's code on the CPU with tiny checkpoints (``python -m benchmarks.batching --tiny``): the
ceiling, every mode's row and the same-seed check run through the project's real tool path. Its numbers mean
nothing here."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("diffusers")

from benchmarks import batching  # noqa: E402


def test_the_tiny_run_measures_every_row_and_writes_json(tmp_path, capsys):
    out = tmp_path / "batching.json"
    batching.main(["--tiny", "--sessions", "2", "--batches", "1,2", "--requests", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["ceiling"]) == {"1", "2"} and all(
        r["images_per_s"] > 0 for r in result["ceiling"].values()
    )
    modes = [row["mode"] for row in result["rows"]]
    assert modes == ["serial (--max-batch 1)", "batched (default)", "batched, --batch-wait-ms 30"]
    for row in result["rows"]:
        assert row["errors"] == [] and row["requests"] == 4 and row["p95_s"] >= row["p50_s"] > 0
    assert result["rows"][0]["batch_sizes"] == {"1": 4}, "serial: every call alone"
    goals = result["goals"]
    assert goals["sessions"] == 2 and set(goals["modes"]) == set(modes[1:]), "the batched modes are checked"
    assert goals["p50_floor_from_ceiling"] > 0
    assert result["same_seed"]["batch"] == [2, 2] and result["same_seed"]["max_abs_diff_levels"] <= 1
    printed = capsys.readouterr().out
    assert "| batched (default) | 2 |" in printed and "goals at 2 sessions" in printed
