"""Regional compilation, the text encoder's graph and the scheduler without host syncs (fastpath/regions.py,
pipelines.py, scheduler.py), on CPU.

Dynamo traces the real diffusers blocks here (with its "eager" backend: the same tracing, guards and
recompiles as inductor, without generating kernels); FakeGraphs stands in for CUDA-graph capture. What is
checked is what a user notices: the same image, the fast path actually used, and the compile work a second
tool (ControlNet after Text2Image) saves.
"""

from __future__ import annotations

import pytest
import torch
from test_fastpath_graphs import FakeGraphs

from foundation_models.fastpath import FastPath
from foundation_models.fastpath import scheduler as fast_scheduler
from foundation_models.fastpath.compiler import BackgroundCompiler
from foundation_models.fastpath.graphs import graphed, runner_for, to_channels_last
from foundation_models.fastpath.pipelines import fast_modules
from foundation_models.fastpath.regions import REGIONS, RegionForward, outermost

diffusers = pytest.importorskip("diffusers")


class DynamoCount:
    """torch.compile with dynamo's eager backend, counting the graphs it compiles (one per class and input
    signature) and the calls into compiled code."""

    def __init__(self):
        self.graphs, self.functions, self.calls = 0, 0, 0

    def backend(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward

    def __call__(self, fn, dynamic=False):
        self.functions += 1
        compiled = torch.compile(fn, backend=self.backend, fullgraph=True, dynamic=dynamic)

        def counted(*args, **kwargs):
            self.calls += 1
            return compiled(*args, **kwargs)

        return counted


def tiny_unet_for(repo_id):
    from foundation_models.tiny.stable_diffusion import tiny_unet

    return tiny_unet(repo_id).eval()


@pytest.fixture
def unet():
    return tiny_unet_for("tests/regions")


def unet_inputs(batch=2, size=32):
    torch.manual_seed(size)
    return torch.randn(batch, 4, size, size), torch.tensor(10), torch.randn(batch, 77, 32)


def unet_calls(module, compiler, times=3, **inputs):
    """Call like a pipeline: eager, graph of eager + background compile, then the graph of compiled."""
    x, t, e = unet_inputs(**inputs)
    out = []
    with torch.inference_mode(), graphed([module], compiler=compiler):
        for i in range(times):
            out.append(module(x, t, encoder_hidden_states=e, return_dict=False)[0])
            if i == 1:
                assert compiler.wait(120)
    with torch.inference_mode():
        expected = module(x, t, encoder_hidden_states=e, return_dict=False)[0]
    for y in out:
        torch.testing.assert_close(y, expected)
    return out


def test_each_block_class_and_signature_compiles_once_not_each_block(unet):
    count = DynamoCount()
    runner = runner_for(unet, FakeGraphs())
    unet_calls(unet, BackgroundCompiler(count))
    blocks = outermost(unet, REGIONS)
    assert list(runner.kinds.values()) == ["compiled"] and not runner.compile_failed
    assert {type(b).__name__ for b in blocks} == {"ResnetBlock2D", "Transformer2DModel"}
    assert all(isinstance(b.__dict__["forward"], RegionForward) for b in blocks)
    assert count.functions == 2, "one compiled function per block class"
    assert 0 < count.graphs < len(blocks), "blocks of one shape share compiled code"


def test_int8_weights_compile_no_more_graphs_than_float(unet):
    """--int8-weights parametrizes each layer; with a class of its own per layer, every block failed the guards
    of the one before and compiled again (12 graphs for 12 blocks instead of 8)."""
    from foundation_models.int8_weights import quantize_

    runner_for(unet, FakeGraphs())
    floats = DynamoCount()
    unet_calls(unet, BackgroundCompiler(floats))
    torch._dynamo.reset()

    quantized = tiny_unet_for("tests/regions")
    assert quantize_(quantized, min_numel=64) > 50
    runner_for(quantized, FakeGraphs())
    ints = DynamoCount()
    unet_calls(quantized, BackgroundCompiler(ints))  # and the same outputs as its eager forward
    assert ints.graphs == floats.graphs < len(outermost(quantized, REGIONS))


def test_controlnet_and_a_second_unet_reuse_the_compiled_blocks(unet):
    from foundation_models.tiny.controlnet import tiny_controlnet
    from foundation_models.tiny.stable_diffusion import tiny_unet

    count = DynamoCount()
    compiler = BackgroundCompiler(count)
    runner_for(unet, FakeGraphs())
    unet_calls(unet, compiler)
    after_unet = count.graphs
    inpaint = tiny_unet("tests/regions-inpaint", in_channels=4).eval()  # other weights, same block shapes
    runner_for(inpaint, FakeGraphs())
    unet_calls(inpaint, compiler)
    controlnet = tiny_controlnet("tests/regions-controlnet").eval()
    runner = runner_for(controlnet, FakeGraphs())
    x, t, e = unet_inputs()
    cond = torch.rand(2, 3, 64, 64)
    with torch.inference_mode(), graphed([controlnet], compiler=compiler):
        for i in range(3):
            down, mid = controlnet(x, t, encoder_hidden_states=e, controlnet_cond=cond, return_dict=False)
            if i == 1:
                assert compiler.wait(120)
    assert list(runner.kinds.values()) == ["compiled"]
    assert count.functions == 2 and count.graphs == after_unet, "nothing new to compile for the second tool"


def test_eager_calls_and_other_threads_never_enter_compiled_code(unet):
    count = DynamoCount()
    runner_for(unet, FakeGraphs())
    unet_calls(unet, BackgroundCompiler(count))
    calls = count.calls
    x, t, e = unet_inputs()
    with torch.inference_mode():
        unet(x, t, encoder_hidden_states=e)  # outside the fast path: every block runs its own eager forward
    assert count.calls == calls


def test_a_job_whose_blocks_are_compiled_here_already_is_known_without_compiling(unet):
    """The compile helper is skipped for such a job (a ControlNet after Text2Image, or the same UNet again),
    and used for one with a new signature (pix2pix's batch of 3)."""
    from torch.utils._pytree import tree_flatten

    from foundation_models.tiny.controlnet import tiny_controlnet

    count = DynamoCount()
    compiler = BackgroundCompiler(count)
    runner = runner_for(unet, FakeGraphs())
    controlnet = tiny_controlnet("tests/regions-controlnet").eval()

    def job(batch, module=unet, **extra):
        x, t, e = unet_inputs(batch=batch)
        return tree_flatten(((x, t), {"encoder_hidden_states": e, "return_dict": False, **extra}))

    for batch in (5, 3):
        assert not compiler.compiled_here(runner, *job(batch), inference=True)
    unet_calls(unet, compiler, batch=5)
    graphs = count.graphs
    assert compiler.compiled_here(runner, *job(5), inference=True)
    cond = {"controlnet_cond": torch.rand(5, 3, 64, 64)}
    assert compiler.compiled_here(runner_for(controlnet, FakeGraphs()), *job(5, **cond), inference=True)
    assert not compiler.compiled_here(runner, *job(3), inference=True), "a new batch size is new work"
    assert count.graphs == graphs, "telling compiles nothing"


def test_no_memory_to_check_a_job_sends_it_to_the_helper(unet, monkeypatch):
    """Under a full budget the eager call that tells whether a job is compiled already may run out of memory:
    the job goes to the compile helper then (it used to skip the helper with a warning)."""
    from torch.utils._pytree import tree_flatten

    compiler = BackgroundCompiler(DynamoCount())
    runner = runner_for(unet, FakeGraphs())
    x, t, e = unet_inputs(batch=2)
    leaves, spec = tree_flatten(((x, t), {"encoder_hidden_states": e, "return_dict": False}))

    def full(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 96.00 MiB")

    monkeypatch.setattr(compiler, "compiled_here", full)
    assert compiler._compiled_here_or_unknown(runner, leaves, spec, inference=True) is False
    monkeypatch.setattr(compiler, "compiled_here", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # anything else is a bug, and says so
        compiler._compiled_here_or_unknown(runner, leaves, spec, inference=True)


@pytest.mark.parametrize("dynamic", [True, False])
def test_a_new_latent_size_is_served_by_the_compiled_blocks(unet, dynamic):
    """Regions are compiled for symbolic sizes (the default): another resolution or batch needs no new compile;
    with static sizes each one compiles its own, in the background. Either way the answer stays the eager one."""
    count = DynamoCount()
    compiler = BackgroundCompiler(count, dynamic=dynamic)
    runner = runner_for(unet, FakeGraphs())
    unet_calls(unet, compiler)
    graphs = count.graphs
    unet_calls(unet, compiler, size=16)
    unet_calls(unet, compiler, batch=3, size=24)
    assert sorted(runner.kinds.values()) == ["compiled"] * 3
    assert (count.graphs == graphs) if dynamic else (count.graphs > graphs)


def test_whole_module_compile_when_there_are_no_blocks():
    from test_fastpath_graphs import Denoiser

    count = DynamoCount()
    model = Denoiser().eval()
    runner = runner_for(model, FakeGraphs())
    compiler = BackgroundCompiler(count)
    # Inputs drawn before any compile starts: dynamo restores the global RNG state after tracing, so draws made
    # meanwhile on another thread may repeat (the tools draw from their own seeded generators).
    x, t, e = torch.randn(2, 8), torch.tensor(3), torch.randn(2, 4, 8)
    with torch.inference_mode():
        expected = model(x, t, encoder_hidden_states=e, return_dict=False)[0]
    with torch.inference_mode(), graphed([model], compiler=compiler):
        for i in range(3):
            torch.testing.assert_close(model(x, t, encoder_hidden_states=e, return_dict=False)[0], expected)
            if i == 1:
                assert compiler.wait(120)
    assert count.functions == 1 and list(runner.kinds.values()) == ["compiled"]


def tiny_pipeline(tmp_path, kind="sd"):
    from foundation_models.tiny.stable_diffusion import build_instruct_pix2pix, build_sd15_base

    if kind == "sd":
        build_sd15_base(tmp_path)
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path, safety_checker=None,
                                                                 requires_safety_checker=False)  # fmt: skip
    else:
        build_instruct_pix2pix(tmp_path)
        pipe = diffusers.StableDiffusionInstructPix2PixPipeline.from_pretrained(
            tmp_path, safety_checker=None, requires_safety_checker=False
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_text2image_through_every_fast_tier_gives_the_eager_image(tmp_path, monkeypatch):
    """The whole pipeline: graphed text encoder, UNet and VAE decoder, compiled regions, the scheduler's sigma
    table and sync-free step — the image is the eager one."""
    from foundation_models.stable_diffusion import _Pipeline

    pipe = tiny_pipeline(tmp_path)
    pipe.scheduler = diffusers.UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    count = DynamoCount()
    fastpath = FastPath(compile_fn=count)
    compiler = fastpath.compiler
    for module in fast_modules(pipe):
        runner_for(module, FakeGraphs())
    solves = []
    monkeypatch.setattr(
        torch.linalg, "solve_ex", lambda *a, _s=torch.linalg.solve_ex, **k: solves.append(1) or _s(*a, **k)
    )

    def image(fast):
        return _Pipeline(pipe, {}, fastpath, {"fast": fast, "compile": True})._run(
            4, 7, None, prompt="a cat", height=64, width=64, output_type="np"
        )

    expected = image(False)
    assert not solves, "off the fast path the scheduler is diffusers' own"
    fast = [image(True) for _ in range(2)]
    assert compiler.wait(120)
    fast += [image(True) for _ in range(2)]
    for got in fast:
        assert abs(got - expected).max() < 1e-5
    kinds = {name: list(runner_for(m).kinds.values()) for name, m in
             (("unet", pipe.unet), ("decoder", pipe.vae.decoder), ("text", pipe.text_encoder))}  # fmt: skip
    assert kinds["unet"] == ["compiled"] and kinds["decoder"] == ["compiled"]
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last), "compiled in NHWC"
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(), "the decoder keeps its layout (no gain measured)"
    assert kinds["text"] == ["eager"], "the text encoder replays a graph of its eager forward"
    assert solves, "UniPC's corrector solved without reading its status back"
    assert all("forward" not in vars(m) for m in fast_modules(pipe))
    assert "step" not in vars(pipe.scheduler) and "set_timesteps" not in vars(pipe.scheduler)


def test_pix2pix_ancestral_sampler_with_a_cpu_generator_gives_the_eager_edit(tmp_path):
    from PIL import Image

    from foundation_models.stable_diffusion import _Pipeline

    pipe = tiny_pipeline(tmp_path, "pix2pix")
    assert type(pipe.scheduler).__name__ in fast_scheduler.SIGMAS_ON_DEVICE
    photo = Image.new("RGB", (64, 64), (200, 80, 40))

    def edit(fast):
        return _Pipeline(pipe, {}, FastPath(), {"fast": fast, "compile": False})._run(
            3, 5, None, prompt="make it blue", image=photo, output_type="np"
        )

    expected = edit(False)
    for _ in range(3):
        assert abs(edit(True) - expected).max() < 1e-6


def test_no_host_sync_mode_keeps_results_and_only_touches_blocking_gpu_copies():
    x = torch.randn(3, 3) + 3 * torch.eye(3)
    b = torch.randn(3)
    with fast_scheduler.NoHostSync():
        solved = torch.linalg.solve(x, b)
        moved = x.to(torch.float16)
    torch.testing.assert_close(solved, torch.linalg.solve(x, b))
    assert moved.dtype == torch.float16
    t = torch.ones(2)
    assert fast_scheduler._blocking_to_gpu((t, "cuda"), {})
    assert fast_scheduler._blocking_to_gpu((t, torch.device("cuda:0"), torch.float16), {})
    assert fast_scheduler._blocking_to_gpu((t,), {"device": "cuda"})
    assert not fast_scheduler._blocking_to_gpu((t, "cuda"), {"non_blocking": True})
    assert not fast_scheduler._blocking_to_gpu((t, torch.float16), {})
    assert not fast_scheduler._blocking_to_gpu((t, "cpu"), {})


@pytest.mark.parametrize("name", ["UniPCMultistepScheduler", "EulerAncestralDiscreteScheduler",
                                  "DPMSolverMultistepScheduler"])  # fmt: skip
def test_sync_free_step_gives_the_same_latents_as_diffusers(name):
    def denoise(fast):
        scheduler = getattr(diffusers, name)()
        torch.manual_seed(0)
        latents, outputs = torch.randn(1, 4, 8, 8), [torch.randn(1, 4, 8, 8) for _ in range(12)]
        extra = {"generator": torch.Generator().manual_seed(3)} if "Ancestral" in name else {}
        with fast_scheduler.scheduler_on_device(scheduler, enabled=fast):
            scheduler.set_timesteps(12)
            for t, eps in zip(scheduler.timesteps, outputs):
                latents = scheduler.step(eps, t, latents, **extra).prev_sample
        return latents

    torch.testing.assert_close(denoise(True), denoise(False), rtol=0, atol=0)


def test_channels_last_weights_only_where_graphs_run_and_only_with_the_compiler(tmp_path):
    """NHWC weights serve the compiled convolutions: never without the compiler (--no-compile keeps the eager
    model as it is), never off the graph backend's device, once; the UNet still gives its answer."""
    from foundation_models.stable_diffusion import _Pipeline

    pipe = tiny_pipeline(tmp_path)
    weight = pipe.unet.conv_in.weight
    fastpath = FastPath()

    def image(fast, compile):
        return _Pipeline(pipe, {}, fastpath, {"fast": fast, "compile": compile})._run(
            3, 7, None, prompt="a cat", height=64, width=64, output_type="np"
        )

    expected = image(False, True)
    runner_for(pipe.unet, FakeGraphs())
    assert abs(image(True, False) - expected).max() < 1e-5
    assert not weight.is_contiguous(memory_format=torch.channels_last), "no compiler, no new layout"

    class CudaOnly(FakeGraphs):
        def accepts(self, tensor):
            return tensor.is_cuda

    class NoGrad(FakeGraphs):  # CudaGraphs' rule, less the device: no tensor that requires grad
        def accepts(self, tensor):
            return not tensor.requires_grad

    assert not to_channels_last(pipe.unet, CudaOnly()), "a CPU model is left alone"
    pipe.unet.requires_grad_(True)  # as from_pretrained leaves it; calls run under inference mode
    assert to_channels_last(pipe.unet, NoGrad())
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not to_channels_last(pipe.unet, NoGrad()), "once"
    with torch.inference_mode():
        assert abs(image(False, True) - expected).max() < 1e-5
