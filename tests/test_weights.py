"""Weights: tiny checkpoints through the real loaders, --model-dir, and a missing checkpoint at first use."""

from __future__ import annotations

import shutil

import pytest

from orchestrator.engine import Orchestrator
from orchestrator.errors import MissingWeightsError
from orchestrator.weights import WeightResolver

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_tiny_checkpoint_has_the_hub_layout_and_is_built_once():
    resolver = WeightResolver("tiny")
    path = resolver.resolve(SD15)
    for part in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                 "tokenizer/vocab.json", "scheduler/scheduler_config.json"):  # fmt: skip
        assert (path / part).is_file(), part
    assert list(path.glob("unet/*.safetensors"))
    stamp = (path / ".tiny-layout").stat().st_mtime_ns
    assert WeightResolver("tiny").resolve(SD15) == path  # a new resolver finds the cached build
    assert (path / ".tiny-layout").stat().st_mtime_ns == stamp


def test_hub_mode_reads_model_dir_org_name(tmp_path):
    shutil.copytree(WeightResolver("tiny").resolve(SD15), tmp_path / SD15)
    assert WeightResolver("hub", model_dir=tmp_path).resolve(SD15) == tmp_path / SD15


def test_missing_checkpoint_offline_names_it_and_the_download_command(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        WeightResolver("hub", model_dir=tmp_path).resolve("Salesforce/blip-image-captioning-base")
    message = str(err.value)
    assert "Salesforce/blip-image-captioning-base" in message
    assert "python -m orchestrator download --load ImageCaptioning_cpu" in message
    assert f"{tmp_path}/Salesforce/blip-image-captioning-base" in message


def test_missing_checkpoint_is_reported_at_first_use_not_start_up(tmp_path):
    orch = Orchestrator("Text2Image_cpu", weights="hub", model_dir=tmp_path / "models", session_root=tmp_path)
    session = orch.new_session()  # start-up is fine: nothing was resolved yet
    call = session.call_tool("text2image", {"prompt": "a lighthouse"})
    assert call.error and f"Checkpoint {SD15} is not in the Hugging Face cache" in call.error
    assert "python -m orchestrator download --load Text2Image_cpu" in call.error
    assert call.images == []
    again = session.call_tool("text2image", {"prompt": "a lighthouse"})  # the session goes on, same advice
    assert again.error == call.error


def test_text2image_through_model_dir_uses_the_same_loader(tmp_path):
    shutil.copytree(WeightResolver("tiny").resolve(SD15), tmp_path / "models" / SD15)
    orch = Orchestrator("Text2Image_cpu", weights="hub", model_dir=tmp_path / "models", session_root=tmp_path)
    with orch.manager.use("Text2Image") as sd:
        image = sd.generate("a lighthouse", "", 64, 64, steps=1, guidance_scale=1.0, seed=0)
    assert image.size == (64, 64)
    assert orch.resolver._resolved[SD15] == tmp_path / "models" / SD15
