"""--fp8: torchao float8 matmuls in the diffusion networks, on GPUs of compute capability 8.9+.

No such GPU is here, so the refusals are tested as they are (one sentence, before anything loads), and the
conversion itself runs on the CPU with torchao's hardware check set aside: torchao's float8 kernels have a CPU
path, so the tiny pipeline really computes with float8 weights and activations. Its speed is measured on an
H100 by ``python -m benchmarks.fast_modes`` (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestrator import cli
from orchestrator.engine import Orchestrator
from orchestrator.errors import SpecError
from orchestrator.settings import Settings

torchao = pytest.importorskip("torchao")


def test_fp8_on_a_cpu_is_one_sentence_before_anything_loads(tmp_path, capsys):
    with pytest.raises(SpecError) as error:
        Orchestrator("Text2Image_cpu", weights="tiny", brain="rules", session_root=tmp_path,
                     settings=Settings.from_env(fp8=True))  # fmt: skip
    assert str(error.value) == (
        "Text2Image: --fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper); cpu is not one."
    )
    argv = [
        "run",
        "--load",
        "Text2Image_cpu",
        "--weights",
        "tiny",
        "--fp8",
        "--brain",
        "rules",
        "/text2image a fox",
    ]
    assert cli.main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("cpu is not one.") and "Traceback" not in "".join(err)


def test_int8_and_fp8_together_are_one_sentence(tmp_path):
    with pytest.raises(
        SpecError, match=r"^--int8-weights and --fp8 change the same layers; choose one of them\.$"
    ):
        Orchestrator("Text2Image_cpu", weights="tiny", brain="rules", session_root=tmp_path,
                     settings=Settings.from_env(int8_weights=True, fp8=True))  # fmt: skip


def test_the_flag_reaches_the_diffusion_cards_only(monkeypatch):
    monkeypatch.setattr("foundation_models.fp8.unsupported", lambda device: None)  # as on an H100
    for argv, expected in ((["--fp8"], True), ([], False)):
        args = cli.build_parser().parse_args(
            ["run", "--load", "Text2Image_cpu,ImageCaptioning_cpu", "--weights", "tiny", *argv, "hi"]
        )
        orch = cli.orchestrator_from_args(args)
        assert orch.settings.fp8 is expected
        assert orch.card_options("Text2Image").get("fp8", False) is expected


def test_an_old_gpu_is_named_in_the_sentence(monkeypatch):
    from foundation_models import fp8

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    assert fp8.unsupported("cuda:0") == (
        "--fp8 needs compute capability 8.9 or newer (Ada, Hopper); cuda:0 is a NVIDIA A100-SXM4-80GB (8.0). "
        "Start without --fp8, or try --int8-weights."
    )


def test_only_linear_layers_with_sides_of_16_become_float8():
    from foundation_models.fp8 import eligible

    assert eligible(torch.nn.Linear(320, 320)) and eligible(torch.nn.Linear(320, 1280))
    assert not eligible(torch.nn.Linear(300, 320))  # not a multiple of 16: torch._scaled_mm refuses it
    assert not eligible(torch.nn.Linear(32, 32))  # too small to pay for its casts
    assert not eligible(torch.nn.Conv2d(320, 320, 3))


@pytest.fixture
def float8_on_cpu(monkeypatch):
    """torchao's float8 conversion on this CPU: its hardware assertion set aside, tiny layers included."""
    quant_api = pytest.importorskip("torchao.quantization.quant_api")
    if not hasattr(quant_api, "_check_hardware_support"):
        pytest.skip("this torchao checks the hardware elsewhere")
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    monkeypatch.setattr("foundation_models.fp8.unsupported", lambda device: None)
    monkeypatch.setattr("foundation_models.fp8.MIN_NUMEL", 0)


def _picture(tmp_path, name, **settings):
    orch = Orchestrator("Text2Image_cpu", weights="tiny", brain="rules", session_root=tmp_path / name,
                        settings=Settings.from_env(**settings))  # fmt: skip
    with orch.manager.use("Text2Image") as model:
        image = model.generate("a red fox in the snow", "", 64, 64, 4, 7.5, 1234)
        converted = [
            n for n, p in model.pipe.unet.named_parameters() if type(p.data).__name__ == "Float8Tensor"
        ]
    orch.close()
    return np.asarray(image, dtype=np.int16), converted


def test_fp8_pictures_keep_the_composition_and_default_ones_do_not_change(tmp_path, float8_on_cpu):
    default, none = _picture(tmp_path, "default")
    fp8, converted = _picture(tmp_path, "fp8", fp8=True)
    again, _ = _picture(tmp_path, "again")
    assert not none and converted, "the UNet's linear layers compute in float8 under --fp8, and only then"
    assert all(".weight" in name for name in converted)
    assert np.array_equal(default, again), "an fp8 run leaves default pictures as they were"
    difference = np.abs(fp8 - default)
    assert 0 < difference.mean() < 8, (
        f"fp8 rounding moves pixels a little, not the picture: {difference.mean():.2f}"
    )
