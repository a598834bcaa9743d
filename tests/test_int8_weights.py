"""--int8-weights: UNet and ControlNet weights stored int8 with per-channel scales, computed in float.

Real quantization of the tiny checkpoints on CPU: what is stored, how far a forward moves, that every
diffusion tool still draws, and that placement counts the smaller size.
"""

from __future__ import annotations

import pytest
import torch

from foundation_models.int8_weights import quantize_, quantized_layers, weight_bytes
from orchestrator.cards import INT8_SIZE, load_cards
from orchestrator.devices import Device
from orchestrator.engine import Orchestrator
from orchestrator.placement import make_plan
from orchestrator.settings import Settings
from orchestrator.spec import parse_load_spec

DIFFUSION = "Text2Image,CannyText2Image,InstructPix2Pix,Inpainting"


def test_linear_and_conv_weights_become_int8_and_stay_close():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(4, 64, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(64, 64, 3, padding=1),
        torch.nn.Flatten(), torch.nn.Linear(64 * 4 * 4, 128), torch.nn.LayerNorm(128), torch.nn.Linear(128, 4),
    ).eval()  # fmt: skip
    x = torch.randn(3, 4, 4, 4)
    with torch.no_grad():
        before, fp_bytes = model(x), weight_bytes(model)
        weights = [m.weight.clone() for m in (model[2], model[4])]
        assert quantize_(model) == 2  # the 4->64 conv (2,304 values) and the 128x4 head are too small
        after = model(x)
    assert quantized_layers(model) == 2
    assert model[2].parametrizations.weight.original.dtype == torch.int8
    assert model[0].weight.dtype == torch.float32, "small layers keep their weights"
    for original, layer in zip(weights, (model[2], model[4])):
        step = layer.parametrizations.weight[0].scale  # one per output channel
        assert step.shape[0] == original.shape[0]
        assert (layer.weight - original).abs().le(step / 2 + 1e-7).all(), "round to nearest, per channel"
    assert weight_bytes(model) < 0.35 * fp_bytes  # float32 -> int8 plus scales
    relative = (after - before).norm() / before.norm()
    assert 0 < relative < 0.02, relative


def test_quantizing_twice_changes_nothing():
    model = torch.nn.Linear(128, 128)
    assert quantize_(model) == 1 and quantize_(model) == 0


@pytest.fixture(scope="module")
def orchestrators(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    spec = ",".join(f"{c}_cpu" for c in DIFFUSION.split(","))
    return {
        int8: Orchestrator(
            spec, weights="tiny", session_root=root, settings=Settings.from_env(int8_weights=int8)
        )
        for int8 in (False, True)
    }


def test_every_diffusion_network_is_stored_int8_and_still_draws(orchestrators):
    orch = orchestrators[True]
    with orch.manager.use("Text2Image") as t2i:
        assert quantized_layers(t2i.pipe.unet) > 10
    with orch.manager.use("CannyText2Image") as cn:
        assert quantized_layers(cn.pipe.controlnet) > 10
        assert cn.pipe.unet is t2i.pipe.unet, "the shared base stays shared"
    for card in ("InstructPix2Pix", "Inpainting"):
        with orch.manager.use(card) as model:
            assert quantized_layers(model.pipe.unet) > 10
            assert model.pipe.unet is not t2i.pipe.unet
            assert quantized_layers(model.pipe.vae) == 0 and quantized_layers(model.pipe.text_encoder) == 0


def test_int8_images_are_close_to_the_float_ones(orchestrators):
    images = {}
    for int8, orch in orchestrators.items():
        with orch.manager.use("Text2Image") as t2i:
            images[int8] = t2i._run(2, 3, None, prompt="a red house", height=64, width=64, output_type="np")
    assert images[True].shape == images[False].shape == (64, 64, 3)
    difference = abs(images[True] - images[False])
    assert 0 < difference.mean() < 0.05, difference.mean()


def test_without_the_flag_nothing_is_quantized(orchestrators):
    with orchestrators[False].manager.use("CannyText2Image") as cn:
        assert quantized_layers(cn.pipe.controlnet) == quantized_layers(cn.pipe.unet) == 0


def test_placement_counts_the_int8_size():
    cards = load_cards()
    items = parse_load_spec(DIFFUSION.replace(",", "_cuda:0,") + "_cuda:0", cards)
    gpu = [Device("cuda:0", "cuda", total_mb=80_000, free_mb=80_000)]
    fp16 = make_plan(cards, items, gpu).devices["cuda:0"].total_mb
    int8 = make_plan(cards.with_int8_diffusion(), items, gpu).devices["cuda:0"].total_mb
    unet = cards.groups["sd15_base"].components["unet"]
    vae_te = (
        cards.groups["sd15_base"].components["vae"] + cards.groups["sd15_base"].components["text_encoder"]
    )
    assert int8 == pytest.approx(vae_te + (fp16 - vae_te) * INT8_SIZE, abs=5)
    assert int8 < fp16 - unet, "the four networks shrink by more than a UNet"


def test_cli_flag_reaches_the_orchestrator():
    from orchestrator import cli

    for argv, expected in ((["--int8-weights"], True), ([], False)):
        args = cli.build_parser().parse_args(
            ["run", "--load", "Text2Image_cpu", "--weights", "tiny", *argv, "hi"]
        )
        orch = cli.orchestrator_from_args(args)
        assert (
            orch.settings.int8_weights is expected
            and orch.card_options("Text2Image").get("int8_weights", False) is expected
        )
