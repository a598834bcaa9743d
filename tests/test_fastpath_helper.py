"""The compile helper process (fastpath/helper.py) and its memory in a budget (fastpath/budget.py), on CPU with inductor's C++ backend and a tiny UNet.

What it is for needs a GPU to see (calls that do not stall while a compile runs; docs/benchmarks.md);
what makes it work is checked here for real: the helper builds the UNet again from its config, with other
weights, and what it compiles is what this process then finds in inductor's and AOT autograd's caches.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils._pytree import tree_flatten

from foundation_models.fastpath.budget import HelperReservations
from foundation_models.fastpath.compiler import BackgroundCompiler
from foundation_models.fastpath.graphs import runner_for
from foundation_models.fastpath.helper import (
    HELPER_OVERHEAD_MB,
    CompileHelper,
    helper_need_mb,
    recipe_for,
    set_owner,
)
from foundation_models.fastpath.regions import REGIONS
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
            assert not helper.prepare(vae_like, [x], tree_flatten(((x,), {}))[1], True, REGIONS, False)
        assert "compiling it here" in caplog.text and not helper.broken, "a failed job leaves the helper up"

        assert helper.prepare(unet, leaves, spec, True, REGIONS, False)
        helper.close()
        assert helper.prepare(unet, leaves, spec, True, REGIONS, False)
        assert helper._proc is None, "a job the cache already holds (a restart) does not start the helper"
    finally:
        helper.close()
    assert (caches / "inductor" / "compile-helper.log").exists()

    before = dict(counters["inductor"])
    compiler = BackgroundCompiler(regions=REGIONS)
    with torch.inference_mode():
        out = compiler.compiled_forward(runner_for(unet).eager)(x, t, encoder_hidden_states=e)
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


def test_a_vram_budget_counts_the_helper_through_the_model_manager(tmp_path):
    orch = Orchestrator("Text2Image_cuda:0", devices=[CPU, cuda_device(0, 80_000, 70_000)],
                        max_vram="cuda:0=8GiB", weights="tiny", session_root=tmp_path)  # fmt: skip
    assert orch.fastpath.helper_budget is orch.manager, (
        "the helper's copy of a module is held inside the budget"
    )
    assert orch.fastpath.compiler.budget is orch.manager


class FakeBudget:
    def __init__(self, ok: bool, fits: bool = True):
        self.ok, self.fits, self.asked, self.released, self.reclaim = ok, fits, [], [], None

    def fits_beside_largest_call(self, device, mb):
        return self.fits

    def reserve_for_helper(self, device, mb, reclaim):
        self.asked.append((device, mb))
        self.reclaim = reclaim
        return self.ok

    def release_helper_reservation(self, device):
        self.released.append(device)


class FakeHelper:
    stopped = 0

    def stop_to_free_memory(self):
        self.stopped += 1


def test_the_compiler_asks_for_the_helpers_room_once_per_size(caches):
    unet = tiny_unet("tests/helper-unet")
    need = helper_need_mb(unet)
    weights = sum(p.numel() * p.element_size() for p in unet.parameters()) // 2**20
    assert need >= 2 * weights + HELPER_OVERHEAD_MB - 1
    compiler = BackgroundCompiler(regions=REGIONS, budget=FakeBudget(ok=True))
    compiler.helper = FakeHelper()
    reservations = compiler.reservations
    assert reservations.reserve("cuda:0", unet) and reservations.reserve("cuda:0", unet)
    assert compiler.budget.asked == [("cuda:0", need)], "held already: not asked again"
    compiler.budget.reclaim()  # a call needs the memory back: the job then waits for a later call
    assert compiler.helper.stopped == 1 and reservations.job_must_wait
    reservations.job_must_wait = False
    assert reservations.reserve("cuda:0", unet) and len(compiler.budget.asked) == 2
    reservations.release_all()
    assert compiler.budget.released == ["cuda:0"]
    reservations = HelperReservations(FakeBudget(ok=False), FakeHelper().stop_to_free_memory)
    assert not reservations.reserve("cuda:1", unet) and reservations.job_must_wait, (
        "no room now: later, not here"
    )
    reservations = HelperReservations(FakeBudget(ok=True, fits=False), FakeHelper().stop_to_free_memory)
    assert not reservations.reserve("cuda:1", unet) and not reservations.job_must_wait, (
        "never room: compiled here"
    )
    assert reservations.budget.asked == []


def test_no_room_in_the_budget_means_the_job_is_compiled_here(caches):
    unet = tiny_unet("tests/helper-unet").eval()
    x = torch.randn(2, 4, 32, 32)
    leaves, spec = tree_flatten(((x, torch.tensor(7)), {"encoder_hidden_states": torch.randn(2, 77, 32)}))
    helper = CompileHelper()
    assert not helper.prepare(unet, leaves, spec, True, REGIONS, False, reserve_memory=lambda: False)
    assert helper._proc is None and not helper.broken


def test_letting_the_helper_go_for_a_call_does_not_turn_it_off(caches, caplog):
    """The manager stops the helper mid-job when a call needs its memory: that job is compiled here, and the
    next job starts the helper again. A helper that dies by itself, by contrast, is not trusted again."""
    unet = tiny_unet("tests/helper-unet").eval()
    x = torch.randn(2, 4, 32, 32)
    leaves, spec = tree_flatten(((x, torch.tensor(7)), {"encoder_hidden_states": torch.randn(2, 77, 32)}))
    helper = CompileHelper(timeout_s=600)

    def prepare_while(stop) -> bool:
        timer = threading.Timer(0.5, stop)
        timer.start()
        try:
            return helper.prepare(unet, leaves, spec, True, REGIONS, False)
        finally:
            timer.cancel()

    try:
        with caplog.at_level(logging.INFO):
            assert not prepare_while(helper.stop_to_free_memory)
        assert not helper.broken and "give its memory to a call" in caplog.text
        assert not prepare_while(lambda: helper._proc.kill())  # the helper process crashes
        assert helper.broken
    finally:
        helper.close()
