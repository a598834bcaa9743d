"""The compile helper process (compile_helper.py), on CPU with inductor's C++ backend and a tiny UNet.

What it is for needs a GPU to see (calls that do not stall while a compile runs; benchmarks/explore_serving.py);
what makes it work is checked here for real: the helper builds the UNet again from its config, with other
weights, and what it compiles is what this process then finds in inductor's and AOT autograd's caches.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils._pytree import tree_flatten

from foundation_models import fast_unet
from foundation_models.compile_helper import CompileHelper, recipe_for, set_owner
from foundation_models.tiny.stable_diffusion import tiny_unet
from orchestrator.devices import CPU, cuda_device
from orchestrator.engine import Orchestrator


@pytest.fixture
def caches(monkeypatch, tmp_path):
    monkeypatch.setenv("VISUAL_ORCHESTRATOR_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    return tmp_path


def test_what_the_helper_compiles_is_found_in_the_caches_here(caches, caplog):
    unet = tiny_unet("tests/helper-unet").eval()
    x, t, e = torch.randn(2, 4, 32, 32), torch.tensor(7), torch.randn(2, 77, 32)
    leaves, spec = tree_flatten(((x, t), {"encoder_hidden_states": e}))
    helper = CompileHelper(timeout_s=600)
    try:
        vae_like = torch.nn.Module()  # a module said to live inside a model that has no such attribute
        set_owner(vae_like, unet, "decoder")
        vae_like.weight = torch.nn.Parameter(torch.zeros(1))
        with caplog.at_level(logging.INFO):
            assert not helper.prepare(
                vae_like, [x], tree_flatten(((x,), {}))[1], True, fast_unet.REGIONS, False
            )
        assert "compiling it here" in caplog.text and not helper.broken, "a failed job leaves the helper up"

        assert helper.prepare(unet, leaves, spec, True, fast_unet.REGIONS, False)
        helper.close()
        assert helper.prepare(unet, leaves, spec, True, fast_unet.REGIONS, False)
        assert helper._proc is None, "a job the cache already holds (a restart) does not start the helper"
    finally:
        helper.close()
    assert (caches / "inductor" / "compile-helper.log").exists()

    before = dict(counters["inductor"])
    compiler = fast_unet.BackgroundCompiler(regions=fast_unet.REGIONS)
    with torch.inference_mode():
        out = compiler.compiled_forward(fast_unet.runner_for(unet).eager)(x, t, encoder_hidden_states=e)
        expected = unet(x, t, encoder_hidden_states=e)
    hits = counters["inductor"]["fxgraph_cache_hit"] - before.get("fxgraph_cache_hit", 0)
    misses = counters["inductor"]["fxgraph_cache_miss"] - before.get("fxgraph_cache_miss", 0)
    assert hits > 0 and misses == 0, f"{hits} graphs from the helper's cache, {misses} compiled here"
    torch.testing.assert_close(out.sample, expected.sample, rtol=1e-4, atol=1e-4)


def test_only_float_models_with_a_config_have_a_recipe():
    unet = tiny_unet("tests/helper-unet")
    unet.register_to_config(_name_or_path=Path("/models/unet"))  # what from_pretrained leaves there
    recipe = recipe_for(unet)
    assert recipe is not None and recipe.cls.endswith(":UNet2DConditionModel") and recipe.attr == ""
    assert recipe.dtype == "float32" and not recipe.channels_last
    unet.to(memory_format=torch.channels_last)
    assert recipe_for(unet).channels_last
    assert recipe_for(torch.nn.Linear(2, 2)) is None, "no config to build it from"
    int8 = unet.conv_in.weight.detach().to(torch.int8)
    unet.conv_in.weight = torch.nn.Parameter(int8, requires_grad=False)  # as --int8-weights stores them
    assert recipe_for(unet) is None, "int8 weights are not built from a config"


def test_a_module_without_a_recipe_never_starts_the_helper():
    helper = CompileHelper()
    block = torch.nn.Linear(4, 4)
    x = torch.randn(1, 4)
    assert not helper.prepare(block, [x], tree_flatten(((x,), {}))[1], True, (), False)
    assert helper._proc is None


def test_a_vram_budget_turns_the_helper_off(tmp_path):
    compiler = fast_unet.background_compiler()
    helper = compiler.helper
    try:
        Orchestrator("Text2Image_cuda:0", devices=[CPU, cuda_device(0, 80_000, 70_000)], max_vram="cuda:0=8GiB",
                     weights="tiny", session_root=tmp_path)  # fmt: skip
        assert compiler.helper is None, "the helper's copy of a module would be outside the budget"
    finally:
        compiler.helper = helper
