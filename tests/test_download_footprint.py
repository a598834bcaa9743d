"""The download selection on the real repositories' listings, the offline readiness check, and the
footprint in docs/weights.md and the README (no network, no models)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import get_args

import pytest

from foundation_models.family import Layout
from foundation_models.stable_diffusion import weights_variant
from orchestrator.cards import load_cards
from orchestrator.download import Need, layout_of, missing_files, repo_need, select_files, spec_needs

ROOT = Path(__file__).resolve().parents[1]
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@pytest.fixture(scope="module")
def footprint():
    spec = importlib.util.spec_from_file_location(
        "weights_footprint", ROOT / "benchmarks" / "weights_footprint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sd15_gets_its_fp16_pipeline_folders_only(footprint):
    listing = footprint.listings()[SD15]
    chosen = select_files(repo_need(load_cards(), SD15), listing)
    assert sorted(chosen) == [
        "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors", "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    ]  # fmt: skip
    assert 2.0e9 < sum(listing[f] for f in chosen) < 2.2e9  # of a 47 GB repository


@pytest.mark.parametrize(
    ("need", "listing", "expected"),
    [
        (Need("a/b", "transformers"), ["config.json", "pytorch_model.bin", "tf_model.h5"], ["config.json", "pytorch_model.bin"]),
        (Need("a/b", "transformers"), ["config.json", "model.safetensors", "model.fp16.safetensors", "flax_model.msgpack"],
         ["config.json", "model.safetensors"]),
        (Need("a/b", "diffusers", variant="fp16"),
         ["config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"],
         ["config.json", "diffusion_pytorch_model.fp16.safetensors"]),
        (Need("a/b", "diffusers", variant="fp16"),
         ["config.json", "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
          "diffusion_pytorch_model.fp16-00002-of-00002.safetensors", "diffusion_pytorch_model.safetensors.index.fp16.json",
          "diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model.safetensors.index.json"],
         ["config.json", "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
          "diffusion_pytorch_model.fp16-00002-of-00002.safetensors", "diffusion_pytorch_model.safetensors.index.fp16.json"]),
        (Need("a/b", "files", ("x.pth", "gone.pth")), ["x.pth", "y.pth"], ["x.pth"]),
    ],
)  # fmt: skip
def test_selection_rules(need, listing, expected):
    assert select_files(need, listing) == expected


def test_offline_check_names_what_is_missing(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"],
                                                           "scheduler": ["diffusers", "PNDMScheduler"]}))  # fmt: skip
    need = Need(SD15, "pipeline", variant="fp16")
    assert missing_files(need, tmp_path)[:2] == ["unet/weights", "vae/"]
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors.index.fp16.json").write_text(
        json.dumps({"weight_map": {"a": "diffusion_pytorch_model.fp16-00001-of-00002.safetensors"}})
    )
    (tmp_path / "unet" / "diffusion_pytorch_model.fp16-00002-of-00002.safetensors").write_bytes(b"")
    assert "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors" in missing_files(need, tmp_path)
    annotators = Need("lllyasviel/Annotators", "files", ("ControlNetHED.pth",))
    assert missing_files(annotators, tmp_path) == ["ControlNetHED.pth"]


def test_loaders_take_the_fp16_variant_when_wanted_or_alone(tmp_path):
    import torch

    (tmp_path / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert weights_variant(tmp_path, torch.float32) == "fp16"  # downloaded alone: upcast on CPU
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert weights_variant(tmp_path, torch.float32) is None
    assert weights_variant(tmp_path, torch.float16) == "fp16"


def test_every_card_has_a_rule_and_a_published_listing(footprint):
    cards = load_cards()
    listed = footprint.listings()
    for card in cards.cards.values():
        if card.checkpoints:
            assert layout_of(card.family) in get_args(Layout), card.name
    for group in cards.groups.values():
        assert layout_of(group.family) in get_args(Layout), group.name
    for need in spec_needs(cards, cards.names()):
        assert need.repo_id in listed, need.repo_id
        assert select_files(need, listed[need.repo_id]), need.repo_id


def test_footprint_meets_the_goal_and_the_docs_show_it(footprint):
    cards = load_cards()
    vision = [
        n for n in cards.names() if cards[n].family != "text_embedding"
    ]  # the knowledge embedders: +0.56 GB
    every = footprint.selected_bytes(cards, vision, footprint.listings())
    worst = footprint.selected_bytes(cards, vision, footprint.listings(confirmed_only=True))
    assert every <= worst <= 25e9  # every vision card within 25 GB, even without the uncertain fp16 files
    assert footprint.selected_bytes(cards, footprint.DEFAULT_CARDS, footprint.listings()) < 3.5e9
    assert footprint.main(["--check"]) == 0, "run python benchmarks/weights_footprint.py --write"
