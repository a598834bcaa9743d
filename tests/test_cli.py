"""`python -m orchestrator plan|tools`: tables, JSON and exit codes, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.cards import load_cards
from orchestrator.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, timeout=120
    )


def test_plan_prints_placement_and_vram_without_loading():
    result = run_cli("plan", "ImageCaptioning_cpu,Text2Image_cpu,CannyText2Image_cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "device", "own"]
    assert any(line.startswith("CannyText2Image") and "sd15_base" in line for line in lines)
    device_row = next(line for line in lines if line.startswith("cpu "))
    cards = load_cards()
    expected = cards["ImageCaptioning"].vram_mb + cards["CannyText2Image"].vram_mb
    expected += sum(cards.groups["sd15_base"].components.values())  # one SD1.5 base for both SD cards
    largest_call = max(cards[c].working_mb for c in ("ImageCaptioning", "Text2Image", "CannyText2Image"))
    assert device_row.split()[1:4] == ["3", f"{expected:,}", f"{largest_call:,}"]
    assert "torch" not in result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ImageCaptionin_cpu", "Did you mean ImageCaptioning?"),
        ("ImageCaptioning_cuda:7", "asks for cuda:7"),
        ("ImageCaptioning_tpu", "unknown device 'tpu'"),
    ],
)
def test_plan_mistakes_exit_2_with_one_sentence(spec, message):
    result = run_cli("plan", spec)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_plan_json_and_budget(capsys):
    assert main(["plan", "Text2Image_cpu,Inpainting_cpu", "--max-vram", "cpu=3GiB", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["placements"]["Inpainting"]["device"] == "cpu"
    assert plan["devices"]["cpu"]["budget_mb"] == 3072
    assert plan["devices"]["cpu"]["takes_turns"] is True
    assert plan["devices"]["cpu"]["working_mb"] == load_cards()["Text2Image"].working_mb > 0


def test_tools_json_lists_name_card_description_inputs(capsys):
    assert main(["tools", "--load", "Text2Image_cuda:0,Inpainting_cpu", "--json"]) == 0
    tools = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in tools] == ["text2image", "inpainting"]
    assert set(tools[0]) == {"name", "card", "description", "inputs"}
    assert tools[0]["inputs"]["required"] == ["prompt"]
    assert tools[1]["inputs"]["properties"]["mask"]["type"] == "string"


def test_bad_arguments_exit_2(capsys):
    assert main(["plan"]) == 2
    assert main(["tools", "--load", "Nope_cpu"]) == 2
    assert main(["tools", "--weights", "huge"]) == 2


@pytest.mark.parametrize("flag, field", [("--no-fast", "fast"), ("--no-compile", "compile"),
                                         ("--no-compile-helper", "compile_helper")])  # fmt: skip
def test_fast_path_flags_reach_the_orchestrators_settings(flag, field):
    from orchestrator import cli

    for argv, expected in (([flag], False), ([], True)):
        args = cli.build_parser().parse_args(
            ["run", "--load", "Text2Image_cpu", "--weights", "tiny", *argv, "hi"]
        )
        orch = cli.orchestrator_from_args(args)
        assert getattr(orch.settings, field) is expected
        if field == "compile_helper":  # the fast path starts no helper process without it
            assert (orch.fastpath.compiler.helper is not None) is expected
