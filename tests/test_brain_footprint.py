"""An hf: brain's GPU memory is kept free when the tools' models are placed (it loads later, on the first chat)."""

from __future__ import annotations

import json

import pytest

from orchestrator.brain import BrainConfig
from orchestrator.brain.footprint import brain_reservation, weights_mb
from orchestrator.devices import CPU, cuda_device
from orchestrator.engine import Orchestrator
from orchestrator.errors import PlacementError

MB = 2**20


def fake_model(folder, mb: int, dtype: str = "bfloat16", name: str = "model.safetensors"):
    """A model folder with a weight file of ``mb`` MB (sparse: nothing is written) and its config."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "torch_dtype": dtype}))
    with open(folder / name, "wb") as f:
        f.truncate(mb * MB)
    return folder


def test_the_reservation_is_the_weights_at_their_loaded_size_plus_a_tenth(tmp_path):
    folder = fake_model(tmp_path / "qwen", 6_000)
    gpu = [CPU, cuda_device(0, 24_000)]
    assert brain_reservation(BrainConfig(kind="hf", model=str(folder)), gpu) == ("cuda:0", 6_600)
    assert brain_reservation(BrainConfig(kind="hf", model=str(folder), quant="int4"), gpu) == (
        "cuda:0",
        1_980,
    )
    assert weights_mb(fake_model(tmp_path / "old", 6_000, dtype="float32")) == 3_300  # loads as 16-bit
    # nothing to keep free: another brain, the CPU, a GPU the brain does not use, a model not on disk
    assert brain_reservation(BrainConfig(kind="openai"), gpu) is None
    assert brain_reservation(BrainConfig(kind="hf", model=str(folder)), [CPU]) is None
    assert brain_reservation(BrainConfig(kind="hf", model=str(folder), device="cuda:1"), gpu) is None
    assert brain_reservation(BrainConfig(kind="hf", model="nobody/not-downloaded"), gpu) is None


def test_tools_placed_beside_a_local_brain_leave_it_room(tmp_path):
    folder = fake_model(tmp_path / "qwen", 6_000)  # 6,600 MB with the margin: 1,400 MB left of 8,000
    devices = [CPU, cuda_device(0, 8_000)]
    alone = Orchestrator("Text2Image_auto", devices=devices, brain="rules", session_root=tmp_path)
    assert alone.plan.device_of("Text2Image") == "cuda:0"
    beside = Orchestrator("Text2Image_auto", devices=devices, brain=f"hf:{folder}", session_root=tmp_path)
    assert beside.plan.device_of("Text2Image") == "cpu"  # 2 GB no longer fits beside the brain
    with pytest.raises(PlacementError) as error:
        Orchestrator("Text2Image_cuda:0", devices=devices, brain=f"hf:{folder}", session_root=tmp_path)
    assert f"6,600 MB of it kept for the hf brain {folder}" in str(error.value)
    small = Orchestrator("Image2Line_cuda:0", devices=devices, brain=f"hf:{folder}", session_root=tmp_path)
    assert small.plan.device_of("Image2Line") == "cuda:0"  # what still fits goes there


def test_plan_shows_the_memory_kept_for_the_brain(tmp_path, monkeypatch, capsys):
    from orchestrator import cli, devices

    folder = fake_model(tmp_path / "qwen", 6_000)
    monkeypatch.setattr(devices, "devices_for", lambda names: [CPU, cuda_device(0, 8_000)])
    assert cli.main(["plan", "Image2Line_cuda:0", "--brain", f"hf:{folder}"]) == 0
    assert f"6,600 MB of the free kept for the hf brain {folder}" in capsys.readouterr().out
    assert (
        cli.main(["plan", "Text2Image_cuda:0", "--brain", f"hf:{folder}", "--quant", "int4"]) == 0
    )  # 1,980 MB
    assert cli.main(["plan", "Text2Image_cuda:0", "--brain", f"hf:{folder}"]) == 2
    assert "kept for the hf brain" in capsys.readouterr().err
    assert cli.main(["plan", "Image2Line_cpu", "--brain", "foo"]) == 2  # a bad argument, as for run and ui
    assert "Unknown brain 'foo'" in capsys.readouterr().err


def test_a_known_brain_not_downloaded_is_sized_from_its_published_config(monkeypatch, capsys):
    """Issue 19: the README's brain-per-GPU table is what ``plan --brain`` says, before any download."""
    from orchestrator import cli, devices
    from orchestrator.brain.footprint import known_brain_mb

    qwen7 = "Qwen/Qwen2.5-7B-Instruct"
    int4, int8, full = (known_brain_mb(qwen7, q) for q in ("int4", "int8", None))
    assert (
        5_500 < int4 < 7_000 < int8 < 10_000 < 14_500 < full < 17_000
    )  # 7.6B params, 1.1B of them embeddings
    assert brain_reservation(
        BrainConfig(kind="hf", model=qwen7, quant="int4"), [CPU, cuda_device(0, 12_288)]
    ) == (
        "cuda:0",
        int4,
    )
    monkeypatch.setattr(devices, "devices_for", lambda names: [CPU, cuda_device(0, 12_288 - 600)])
    spec = "ImageCaptioning_cuda:0,Text2Image_cuda:0"
    assert cli.main(["plan", spec, "--brain", f"hf:{qwen7}", "--quant", "int4"]) == 0  # a 12 GB card
    assert f"{int4:,} MB of the free kept for the hf brain {qwen7}" in capsys.readouterr().out
    assert cli.main(["plan", spec, "--brain", f"hf:{qwen7}"]) == 2  # 16-bit does not fit beside the tools
    assert "kept for the hf brain" in capsys.readouterr().err


def test_the_readme_recommends_what_plan_places():
    from orchestrator.cards import load_cards
    from orchestrator.vram_table import GPU_SIZES_GB, QUANT_ORDER, TOOL_SETS, fits, recommend_brain

    cards = load_cards()
    spec = TOOL_SETS["captions + text-to-image"]
    model, quant = recommend_brain(cards, spec, 12 * 1024)
    assert fits(cards, spec, 12 * 1024, model, quant)
    higher = QUANT_ORDER[: QUANT_ORDER.index(quant)]
    assert not any(fits(cards, spec, 12 * 1024, model, q) for q in higher)  # the best precision that fits
    assert recommend_brain(cards, spec, 24 * 1024) != (model, quant) and 24 in GPU_SIZES_GB
