"""The GPU benchmark's code on CPU with tiny checkpoints: every section runs and the report is written.

The numbers mean nothing here (tiny models, CPU); what is tested is that `python -m benchmarks.run_all`
goes through the project's real loading and tool paths and the baseline's, and reports what it measured.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("langchain_core")

from benchmarks import run_all  # noqa: E402

# No Image2Canny: CannyText2Image then takes the benchmark's own edge map, as in a --cards run on the GPU (a
# photo there made canny2image refuse it, and the per-card row recorded the refusal).
CARDS = "Text2Image,CannyText2Image"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    sections = "weights,ours,baseline,latency,agreement,variants,budget,overhead"
    run_all.main(["--tiny", "--device", "cpu", "--cards", CARDS, "--repeats", "1", "--sections", sections,
                  "--out", str(folder / "benchmarks.md"), "--json", str(folder / "results.json")])  # fmt: skip
    return (folder / "benchmarks.md").read_text(), json.loads((folder / "results.json").read_text())


def test_every_section_ran_without_errors(report):
    _, results = report
    assert results["errors"] == {}
    titles = " / ".join(t["title"] for t in results["tables"])
    for expected in ("Shared components", "Per card", "Latency", "Same seed", "Variants", "Budget mode",
                     "overhead per turn"):  # fmt: skip
        assert expected in titles


def test_each_card_was_called_cold_and_warm(report):
    _, results = report
    assert set(results["cards"]) == set(CARDS.split(","))
    for card, record in results["cards"].items():
        assert record["error"] is None, (card, record["error"])
        assert record["first_run_s"] > 0 and record["warm_s"] > 0


def test_ours_and_the_baseline_compute_the_same_image(report):
    _, results = report
    agreement = results["values"]["agreement/Text2Image: ours fast vs baseline"]
    assert agreement["max"] < 1e-3, "same weights, scheduler and seed must give the same pixels"


def test_the_report_has_the_summary_and_how_it_was_made(report):
    markdown, _ = report
    assert "Summary: ours against the TaskMatrix way" in markdown
    assert "Text2Image 64², 2 steps" in markdown
    assert "How these numbers are made" in markdown
    assert "Command: `python -m benchmarks.run_all --tiny" in markdown


def test_the_fast_modes_sections_run_tiny(tmp_path):
    """Issue 25's sections (compiled-code file, restart, draft, fp8) on CPU: the draft keeps default pictures; fp8 and the
    compiled forward need a GPU, so fp8 says why it was skipped and the restart processes stay eager."""
    results = run_all.main(["--tiny", "--device", "cpu", "--cards", "Text2Image,Text2ImageDraft", "--repeats", "1",
                            "--sections", "weights,compiled_file,restart,draft,fp8", "--json", str(tmp_path / "r.json")])  # fmt: skip
    assert results["errors"] == {}
    values = results["values"]
    assert values["draft"]["default_unchanged"] is True and values["draft"]["draft"]["median"] > 0
    assert values["fp8"]["skipped"].startswith("--fp8 needs an NVIDIA GPU")
    assert values["compiled_file"]["cold"]["calls"] == 3 and not values["compiled_file"]["cold"]["compiled"]
    assert 0 < values["compiled_file"]["cold"]["load_s"] < values["compiled_file"]["cold"]["start_s"]
    assert values["restart"]["first_compiled_call_s"] > 0, (
        "the restart section runs without the latency section"
    )
    titles = " / ".join(t["title"] for t in results["tables"])
    assert "Restart to compiled" in titles and "Draft mode" in titles and "--fp8" in titles
