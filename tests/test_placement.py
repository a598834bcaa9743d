"""The load spec and the pure planner, against fake inventories of 0, 1 and 8 GPUs."""

from __future__ import annotations

import os

import pytest

from orchestrator.cards import load_cards
from orchestrator.devices import CPU, cuda_device, detect_devices, nvidia_smi_devices
from orchestrator.errors import PlacementError, SpecError
from orchestrator.placement import make_plan
from orchestrator.spec import LoadItem, parse_budgets, parse_load_spec

CARDS = load_cards()
NO_GPU = [CPU]
ONE_GPU = [CPU, cuda_device(0, 24_000, 23_000)]
EIGHT_GPUS = [CPU] + [cuda_device(i, 81_559, 80_000) for i in range(8)]
SD_BASE_MB = sum(CARDS.groups["sd15_base"].components.values())
CONTROLNETS = [n for n in CARDS.names() if n.endswith("Text2Image") and n != "Text2Image"]


def plan(spec: str, devices, max_vram=None):
    return make_plan(CARDS, parse_load_spec(spec, CARDS), devices, parse_budgets(max_vram))


# -- the spec -------------------------------------------------------------------------------------
def test_spec_items_and_devices():
    items = parse_load_spec(
        " ImageCaptioning_cuda:0 , Text2Image_cuda,Image2Canny_cpu,Text2Box_auto,Segmenting ", CARDS
    )
    assert items == [
        LoadItem("ImageCaptioning", "cuda:0"),
        LoadItem("Text2Image", "cuda:0"),
        LoadItem("Image2Canny", "cpu"),
        LoadItem("Text2Box", "auto"),
        LoadItem("Segmenting", "auto"),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ImageCaptionin_cuda:0", "Unknown model 'ImageCaptionin'. Did you mean ImageCaptioning?"),
        ("imagecaptioning_cpu", "Did you mean ImageCaptioning?"),
        ("Teleporter_cpu", "Unknown model 'Teleporter'. Known models: ImageCaptioning"),
        ("ImageCaptioning_gpu", "unknown device 'gpu': use cpu, cuda, cuda:N, mps or auto"),
        ("ImageCaptioning_cuda:x", "unknown device 'cuda:x'"),
        ("Text2Image_cpu,Text2Image_cuda:0", "Text2Image is listed twice"),
        (" , ", "--load is empty"),
    ],
)
def test_spec_mistakes_are_one_sentence(spec, message):
    with pytest.raises(SpecError) as err:
        parse_load_spec(spec, CARDS)
    assert message in str(err.value)
    assert str(err.value).count("\n") == 0


def test_budgets():
    assert parse_budgets("cuda:0=8GiB,cpu=512MiB") == {"cuda:0": 8192, "cpu": 512}
    assert parse_budgets(["cuda=1.5GiB", "cuda:1=2000"]) == {"cuda:0": 1536, "cuda:1": 2000}
    assert parse_budgets("cuda:0=8GB") == {"cuda:0": 7629}
    for bad in ("cuda:0", "cuda:0=lots", "auto=8GiB", "gpu0=8GiB"):
        with pytest.raises(SpecError, match="--max-vram"):
            parse_budgets(bad)


# -- no GPU ---------------------------------------------------------------------------------------
def test_no_gpu_auto_goes_to_cpu():
    p = plan("ImageCaptioning_auto,Text2Image_auto", NO_GPU)
    assert {c: pl.device for c, pl in p.placements.items()} == {"ImageCaptioning": "cpu", "Text2Image": "cpu"}


@pytest.mark.parametrize("spec", ["Text2Image_cuda:0", "Text2Image_cuda", "Text2Image_mps"])
def test_no_gpu_explicit_gpu_is_refused(spec):
    with pytest.raises(SpecError, match="use Text2Image_cpu or Text2Image_auto|does not have"):
        plan(spec, NO_GPU)


def test_budget_for_a_missing_device():
    with pytest.raises(SpecError, match="--max-vram names cuda:3, which this machine does not have"):
        plan("Text2Image_cpu", ONE_GPU, "cuda:3=8GiB")


# -- one GPU --------------------------------------------------------------------------------------
def test_one_gpu_shared_base_counts_once():
    p = plan("Text2Image_cuda:0,CannyText2Image_cuda:0,DepthText2Image_cuda:0", ONE_GPU)
    load = p.devices["cuda:0"]
    assert load.total_mb == SD_BASE_MB + 2 * CARDS["CannyText2Image"].vram_mb
    assert not load.takes_turns


def test_one_gpu_missing_index_names_what_exists():
    with pytest.raises(SpecError, match=r"asks for cuda:1, but this machine has 1 GPU\(s\) \(cuda:0\)"):
        plan("ImageCaptioning_cuda:0,Text2Image_cuda:1", ONE_GPU)


def test_one_gpu_does_not_fit_names_model_mb_free_and_what_to_do():
    small = [CPU, cuda_device(0, 4096, 2500)]
    with pytest.raises(PlacementError) as err:
        plan("ImageCaptioning_cuda:0,Text2Image_cuda:0", small)
    message = str(err.value)
    working = CARDS["Text2Image"].working_mb
    assert working > 0, "the card says how much memory a call takes"
    assert f"Text2Image needs {SD_BASE_MB:,} MB plus {working:,} MB for a call to run on cuda:0" in message
    assert f"only {2500 - CARDS['ImageCaptioning'].vram_mb:,} MB is free after ImageCaptioning" in message
    assert "Text2Image_cpu" in message and "--max-vram cuda:0=" in message


def test_one_gpu_budget_lets_more_models_take_turns():
    spec = "Text2Image_cuda:0," + ",".join(f"{c}_cuda:0" for c in CONTROLNETS) + ",Inpainting_cuda:0"
    with pytest.raises(PlacementError):
        plan(spec, [CPU, cuda_device(0, 8192, 8000)])
    p = plan(spec, [CPU, cuda_device(0, 24_000, 23_000)], "cuda:0=4GiB")
    load = p.devices["cuda:0"]
    assert load.capacity_mb == 4096 and load.takes_turns
    assert load.total_mb > 4096


def test_budget_smaller_than_one_model_is_refused():
    working = CARDS["Text2Image"].working_mb
    message = (
        f"Text2Image needs {SD_BASE_MB:,} MB plus {working:,} MB for a call to run on cuda:0 but its budget"
    )
    with pytest.raises(PlacementError, match=f"{message} allows 1,024 MB"):
        plan("Text2Image_cuda:0", ONE_GPU, "cuda:0=1GiB")


def test_budget_keeps_room_for_a_call_not_just_the_weights():
    """A budget that holds Text2Image's weights but not the memory its call takes is refused before anything
    loads, instead of running out of memory (or over the budget) at the first picture."""
    weights = SD_BASE_MB
    working = CARDS["Text2Image"].working_mb
    with pytest.raises(PlacementError, match="for a call to run"):
        plan("Text2Image_cuda:0", ONE_GPU, f"cuda:0={weights + working // 2}MiB")
    load = plan("Text2Image_cuda:0", ONE_GPU, f"cuda:0={weights + working}MiB").devices["cuda:0"]
    assert not load.takes_turns


def test_models_that_fill_the_free_memory_leave_no_room_to_run():
    free = SD_BASE_MB + CARDS["InstructPix2Pix"].vram_mb + CARDS["InstructPix2Pix"].working_mb // 2
    with pytest.raises(PlacementError, match="for a call to run"):
        plan("Text2Image_cuda:0,InstructPix2Pix_cuda:0", [CPU, cuda_device(0, 24_000, free)])
    p = plan("Text2Image_auto,InstructPix2Pix_auto", [CPU, cuda_device(0, 24_000, free)])
    assert p.device_of("Text2Image") == "cuda:0" and p.device_of("InstructPix2Pix") == "cpu"


def test_one_gpu_auto_overflows_to_cpu():
    free = SD_BASE_MB + CARDS["InstructPix2Pix"].vram_mb + CARDS["Inpainting"].vram_mb // 2
    p = plan("Text2Image_auto,InstructPix2Pix_auto,Inpainting_auto", [CPU, cuda_device(0, 8000, free)])
    assert p.device_of("Text2Image") == "cuda:0"
    assert p.device_of("InstructPix2Pix") == "cuda:0"  # its own UNet fits beside the base
    assert p.device_of("Inpainting") == "cpu"  # half its UNet's size is left: it goes to the CPU


# -- eight GPUs -----------------------------------------------------------------------------------
def test_eight_gpus_auto_keeps_sd_family_together_and_spreads_the_rest():
    spec = ",".join(f"{n}_auto" for n in CARDS.names())
    p = plan(spec, EIGHT_GPUS)
    sd_users = [n for n in CARDS.names() if "sd15_base" in CARDS[n].shares]
    assert len({p.device_of(n) for n in sd_users}) == 1, "the SD1.5 base should be loaded once"
    used = {pl.device for pl in p.placements.values()}
    assert len(used) >= 4, f"models should spread over the GPUs, got {sorted(used)}"
    assert "cpu" not in used
    total = sum(load.total_mb for load in p.devices.values())
    assert total == sum(CARDS[n].vram_mb for n in CARDS.names()) + sum(
        sum(g.components.values()) for g in CARDS.groups.values()
    )


def test_eight_gpus_explicit_placement_copies_the_base_per_device():
    p = plan("Text2Image_cuda:0,CannyText2Image_cuda:7", EIGHT_GPUS)
    assert p.device_of("CannyText2Image") == "cuda:7"
    assert p.devices["cuda:0"].total_mb == SD_BASE_MB
    assert p.devices["cuda:7"].total_mb == SD_BASE_MB + CARDS["CannyText2Image"].vram_mb


def test_dependencies_follow_the_composite():
    p = plan("ImageEditing_cuda:3,Text2Box_cuda:5", EIGHT_GPUS)
    assert p.device_of("Text2Box") == "cuda:5"  # listed: its own device
    assert p.device_of("Segmenting") == "cuda:3"  # pulled in: the composite's device
    assert p.device_of("Inpainting") == "cuda:3"
    assert p.placements["Segmenting"].requested == "cuda:3"


# -- reading the inventory ------------------------------------------------------------------------
@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\nprintf '0, 81559, 80000\\n1, 81559, 1200\\n2, 24576, 24000\\n'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return script


def test_gpus_are_read_from_nvidia_smi_without_torch(fake_nvidia_smi):
    assert nvidia_smi_devices() == [cuda_device(0, 81559, 80000), cuda_device(1, 81559, 1200),
                                    cuda_device(2, 24576, 24000)]  # fmt: skip
    assert detect_devices()[0] == CPU


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("2,0", [(24576, 24000), (81559, 80000)]),
        ("1", [(81559, 1200)]),
        ("", []),
        ("0,7,2", [(81559, 80000)]),
    ],
)
def test_cuda_visible_devices_is_honoured(fake_nvidia_smi, monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert [(d.total_mb, d.free_mb) for d in nvidia_smi_devices()] == expected
    assert [d.name for d in nvidia_smi_devices()] == [f"cuda:{i}" for i in range(len(expected))]


def test_uuids_in_cuda_visible_devices_leave_the_mapping_to_torch(fake_nvidia_smi, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f3a")
    assert nvidia_smi_devices() is None
