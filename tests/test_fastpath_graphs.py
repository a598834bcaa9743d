"""The fast path's graphs (CUDA-graph replay of the denoiser; fastpath/graphs.py) on CPU: eager fallback, the flag, graphs per input shape.

CUDA graphs need a GPU (benchmarks/ measures them); here a fake backend stands in for capture and replay
so the bookkeeping around it is tested: which call runs eager, which captures, which replays, and that
every path gives the eager answer.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils._pytree import tree_unflatten

from foundation_models.fastpath import FastPath
from foundation_models.fastpath.graphs import GraphedForward, graphed, release, runner_for


class FakeGraphs:
    """Capture = remember the function and static copies of the inputs; replay = copy in, run it again."""

    def __init__(self, fail: bool = False):
        self.fail, self.captures, self.replays = fail, 0, 0

    def ready(self) -> bool:
        return True

    def accepts(self, tensor: torch.Tensor) -> bool:
        return True

    def reset(self) -> None:
        pass

    def capture(self, fn, leaves, spec):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captures += 1
        static = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]
        args, kwargs = tree_unflatten(static, spec)
        return (fn, static, spec), fn(*args, **kwargs)

    def replay(self, captured, leaves):
        self.replays += 1
        fn, static, spec = captured
        for buffer, value in zip(static, leaves):
            if isinstance(buffer, torch.Tensor):
                buffer.copy_(value)
        args, kwargs = tree_unflatten(static, spec)
        return fn(*args, **kwargs)


class Denoiser(torch.nn.Module):
    """Shaped like a UNet call: sample, timestep, context, optional residuals, a float flag, return_dict."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(
        self, sample, timestep, encoder_hidden_states=None, residuals=None, scale=1.0, return_dict=True
    ):
        out = self.proj(sample) * scale + timestep.float() + encoder_hidden_states.mean()
        if residuals is not None:
            out = out + sum(r.sum() for r in residuals)
        return (out,) if not return_dict else {"sample": out}


def call(module, batch=2, t=3, residuals=None, scale=1.0):
    torch.manual_seed(batch * 100 + t)
    sample, context = torch.randn(batch, 8), torch.randn(batch, 4, 8)
    return module(sample, torch.tensor(t), encoder_hidden_states=context, residuals=residuals, scale=scale,
                  return_dict=False)[0]  # fmt: skip


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Denoiser().eval()


def expected(model, **kwargs):
    with torch.inference_mode():
        return call(model, **kwargs)


def test_first_call_eager_second_captures_then_replays_with_the_eager_answer(model):
    backend = FakeGraphs()
    runner = runner_for(model, backend)
    with torch.inference_mode(), graphed([model]):
        outputs = [call(model, t=t) for t in (5, 4, 3, 2)]
    assert (backend.captures, backend.replays) == (1, 2)
    for t, out in zip((5, 4, 3, 2), outputs):
        torch.testing.assert_close(out, expected(model, t=t))
    assert "forward" not in model.__dict__, "the patch must not outlive the block"
    assert len(runner.graphs) == 1


def test_each_shape_and_flag_gets_its_own_graph(model):
    backend = FakeGraphs()
    runner_for(model, backend)
    residuals = [torch.ones(2, 8)]
    with torch.inference_mode(), graphed([model]):
        for _ in range(3):
            call(model, batch=2)
            call(model, batch=3)  # InstructPix2Pix runs three guidance branches
            call(model, batch=2, residuals=residuals)  # ControlNet residuals
            out = call(model, batch=2, scale=0.5)
    assert backend.captures == 4 and backend.replays == 4
    torch.testing.assert_close(out, expected(model, batch=2, scale=0.5))


def test_outputs_are_fresh_tensors_not_the_graphs_buffers(model):
    runner_for(model, FakeGraphs())
    with torch.inference_mode(), graphed([model]):
        first, second, third = (call(model, t=t) for t in (1, 1, 2))
    assert first.data_ptr() != second.data_ptr() != third.data_ptr()
    torch.testing.assert_close(second, expected(model, t=1))


def test_moved_or_released_weights_drop_the_graphs(model):
    backend = FakeGraphs()
    runner = runner_for(model, backend)
    with torch.inference_mode(), graphed([model]):
        call(model), call(model)
        assert len(runner.graphs) == 1
        model.proj.weight.data = model.proj.weight.data.clone()  # what .to(device) does to every weight
        call(model)
        assert runner.graphs == {}, "a graph must never read weights from their old address"
        call(model)
        release([model])
        assert runner.graphs == {}
    assert backend.captures == 2


def test_failed_capture_stays_eager_and_says_so_once(model, caplog):
    backend = FakeGraphs(fail=True)
    runner_for(model, backend)
    with caplog.at_level(logging.WARNING), torch.inference_mode(), graphed([model]):
        outputs = [call(model, t=7) for _ in range(4)]
    assert [r.levelname for r in caplog.records].count("WARNING") == 1
    assert "runs eagerly" in caplog.text
    for out in outputs:
        torch.testing.assert_close(out, expected(model, t=7))


def test_gradients_and_cpu_run_eager(model):
    runner = GraphedForward(model)  # the real CUDA backend: on a CPU-only machine nothing is captured
    model.forward = runner
    for _ in range(3):
        out = call(model)
    assert runner.graphs == {} and out.requires_grad  # with autograd on, never graphed


def test_flag_off_leaves_the_module_alone(model, monkeypatch, tmp_path):
    from orchestrator.engine import Orchestrator
    from orchestrator.settings import SWITCHES

    FAST_ENV = SWITCHES["fast"]

    with graphed([model], enabled=False):
        assert "forward" not in model.__dict__
    monkeypatch.setenv(FAST_ENV, "0")  # read at the edge, by the Orchestrator; a card's own option wins
    fastpath = Orchestrator("Text2Image_cpu", weights="tiny", session_root=tmp_path).fastpath
    assert fastpath.fast_for({}) is False and fastpath.fast_for({"fast": True}) is True
    monkeypatch.setenv(FAST_ENV, "1")
    fastpath = Orchestrator("Text2Image_cpu", weights="tiny", session_root=tmp_path).fastpath
    assert fastpath.fast_for({}) is True and fastpath.fast_for({"fast": False}) is False


def test_sd_pipeline_fast_and_eager_give_the_same_image(tmp_path):
    """On CPU the fast path falls back to eager: the same seed gives the same pixels either way."""
    from foundation_models.stable_diffusion import _Pipeline
    from foundation_models.tiny.stable_diffusion import build_sd15_base

    diffusers = pytest.importorskip("diffusers")
    build_sd15_base(tmp_path)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path, safety_checker=None,
                                                             requires_safety_checker=False)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    images = []
    for fast in (True, False):
        sd = _Pipeline(pipe, {}, FastPath(), {"fast": fast})
        images.append(sd._run(2, 7, None, prompt="a cat", height=64, width=64, output_type="np"))
        assert "forward" not in pipe.unet.__dict__
    assert (images[0] == images[1]).all()


@pytest.mark.parametrize(
    "field, on", [("fast", True), ("fast", False), ("compile", True), ("compile", False)]
)
def test_orchestrator_fast_path_settings_reach_the_diffusion_tools(tmp_path, field, on):
    from orchestrator.engine import Orchestrator
    from orchestrator.settings import Settings

    cards = ("Text2Image", "InstructPix2Pix", "CannyText2Image")
    orch = Orchestrator(",".join(f"{c}_cpu" for c in cards), weights="tiny", session_root=tmp_path,
                        settings=Settings.from_env(**{field: on}))  # fmt: skip
    for card in cards:
        with orch.manager.use(card) as model:
            assert getattr(model, field) is on
