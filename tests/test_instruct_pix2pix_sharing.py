"""InstructPix2Pix shares the SD1.5 base's VAE, text encoder and tokenizer only when the files are identical."""

from __future__ import annotations

import shutil

import torch

from foundation_models.tiny.stable_diffusion import INSTRUCT_PIX2PIX, SD15_BASE
from orchestrator.engine import Orchestrator
from orchestrator.weights import WeightResolver

LOAD = "Text2Image_cpu,InstructPix2Pix_cpu"


def _both(orch: Orchestrator):
    with orch.manager.use("Text2Image") as base:
        pass
    with orch.manager.use("InstructPix2Pix") as pix2pix:
        pass
    return base, pix2pix


def test_identical_files_share_the_base_components(tmp_path):
    base, pix2pix = _both(Orchestrator(LOAD, weights="tiny", session_root=tmp_path))
    for name in ("vae", "text_encoder", "tokenizer"):
        assert getattr(pix2pix.pipe, name) is getattr(base.pipe, name), name
    assert pix2pix.pipe.unet is not base.pipe.unet and pix2pix.pipe.unet.config.in_channels == 8
    assert set(pix2pix.own) == {"unet"}  # moving the card never moves the shared base


def test_a_different_vae_is_loaded_from_the_checkpoint_itself(tmp_path):
    from diffusers import AutoencoderKL

    resolver = WeightResolver("tiny")
    models = tmp_path / "models"
    shutil.copytree(resolver.resolve(SD15_BASE), models / SD15_BASE)
    shutil.copytree(resolver.resolve(INSTRUCT_PIX2PIX), models / INSTRUCT_PIX2PIX)
    vae_dir = models / INSTRUCT_PIX2PIX / "vae"
    vae = AutoencoderKL.from_pretrained(vae_dir)
    with torch.no_grad():
        next(vae.parameters()).add_(0.5)
    vae.save_pretrained(vae_dir)

    orch = Orchestrator(LOAD, weights="hub", model_dir=models, session_root=tmp_path / "sessions")
    base, pix2pix = _both(orch)
    assert pix2pix.pipe.vae is not base.pipe.vae
    assert torch.allclose(next(pix2pix.pipe.vae.parameters()), next(base.pipe.vae.parameters()) + 0.5)
    assert (
        pix2pix.pipe.text_encoder is base.pipe.text_encoder and pix2pix.pipe.tokenizer is base.pipe.tokenizer
    )
    assert set(pix2pix.own) == {"unet", "vae"}
