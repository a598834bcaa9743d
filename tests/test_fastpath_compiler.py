"""The compiled tier of the fast path (fastpath/compiler.py) on CPU: compiled in the background, then graphed.

CUDA graphs and inductor's GPU kernels need a GPU (benchmarks/ measures them); here the FakeGraphs backend
stands in for capture and replay, and a counting wrapper (or inductor's CPU backend) for the compiler, so
the tiering is tested for real: which call runs eager, which graph holds which forward, that a failure
keeps the faster path it had, and that every call gives the eager answer.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

import pytest
import torch
from test_fastpath_graphs import Denoiser, FakeGraphs, call, expected

from foundation_models.fastpath import building_models, scheduler
from foundation_models.fastpath.compiler import MAX_OUT_OF_MEMORY_COMPILES, RETRY_HELPER_S, BackgroundCompiler
from foundation_models.fastpath.graphs import graphed, release, runner_for
from foundation_models.fastpath.regions import RegionCompiler, RegionForward


class CountingCompile:
    """A stand-in for torch.compile: the same function, counted; or a failure, like a missing compiler."""

    def __init__(self, fail: bool = False):
        self.fail, self.compiled, self.calls = fail, 0, 0

    def __call__(self, forward, dynamic=False):
        if self.fail:
            raise RuntimeError(  # worded as dynamo words a backend's failure: the cause on the second line
                "backend='inductor' raised:\nRuntimeError: Cannot find a working triton installation\n\n"
                "Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace"
            )
        self.compiled += 1

        def compiled(*args, **kwargs):
            self.calls += 1
            return forward(*args, **kwargs)

        return compiled


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Denoiser().eval()


def run(model, compiler, ts, eager_graphs=True, wait_after=None):
    outputs = []
    with torch.inference_mode(), graphed([model], compiler=compiler, eager_graphs=eager_graphs):
        for i, t in enumerate(ts):
            outputs.append(call(model, t=t))
            if wait_after is not None and i == wait_after:
                assert compiler.wait(30), "the background compile never finished"
    for t, out in zip(ts, outputs):
        torch.testing.assert_close(out, expected(model, t=t))
    return outputs


def test_eager_graph_first_then_a_graph_of_the_compiled_forward(model):
    backend, compile_fn = FakeGraphs(), CountingCompile()
    runner = runner_for(model, backend)
    compiler = BackgroundCompiler(compile_fn)
    run(model, compiler, (9, 8, 7, 6, 5), wait_after=1)
    key = next(iter(runner.graphs))
    assert runner.kinds == {key: "compiled"}
    assert compile_fn.compiled == 1, "one compile per module, whatever the number of calls"
    # call 1 eager, call 2 captures the eager graph and queues the compile (which runs the compiled forward
    # once), call 3 captures the compiled graph, calls 4-5 replay it
    assert (backend.captures, backend.replays, compile_fn.calls) == (2, 2, 2 + 2)


def test_without_a_compiler_the_eager_graph_stays(model):
    backend = FakeGraphs()
    runner = runner_for(model, backend)
    run(model, None, (9, 8, 7, 6))
    assert list(runner.kinds.values()) == ["eager"] and (backend.captures, backend.replays) == (1, 2)


def test_decoder_skips_the_eager_graph_and_waits_for_the_compiled_one(model):
    backend, compile_fn = FakeGraphs(), CountingCompile()
    runner = runner_for(model, backend)
    compiler = BackgroundCompiler(compile_fn)
    run(model, compiler, (4, 4, 4, 4), eager_graphs=False, wait_after=0)
    assert list(runner.kinds.values()) == ["compiled"]
    assert (backend.captures, backend.replays) == (1, 2)


def test_a_failed_compile_keeps_the_eager_graph_and_says_so_once(model, caplog):
    backend = FakeGraphs()
    runner = runner_for(model, backend)
    compiler = BackgroundCompiler(CountingCompile(fail=True))
    with caplog.at_level(logging.WARNING):
        run(model, compiler, (3, 3, 3, 3, 3, 3), wait_after=1)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "uncompiled fast path" in warnings[0].getMessage()
    assert "Cannot find a working triton installation" in warnings[0].getMessage()  # the cause, not "raised:"
    assert runner.compile_failed and list(runner.kinds.values()) == ["eager"]
    assert backend.replays == 4, "the eager graph keeps replaying"


class OutOfMemoryGraphs(FakeGraphs):
    """Captures run out of memory ``times`` times (a full budget: --max-vram caps torch's allocator)."""

    def __init__(self, times: int):
        super().__init__()
        self.times = times

    def capture(self, fn, leaves, spec):
        if self.times:
            self.times -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return super().capture(fn, leaves, spec)


def test_a_capture_out_of_memory_runs_eagerly_and_the_next_call_captures(model, caplog):
    backend = OutOfMemoryGraphs(times=1)
    runner = runner_for(model, backend)
    with caplog.at_level(logging.WARNING):
        run(model, None, (9, 8, 7, 6))
    assert list(runner.kinds.values()) == ["eager"] and (backend.captures, backend.replays) == (1, 1)
    assert not caplog.records, "running out of memory once is no reason to give up graphs"


class OutOfMemoryCompile(CountingCompile):
    def __init__(self, times: int):
        super().__init__()
        self.times = times

    def __call__(self, forward, dynamic=False):
        compiled = super().__call__(forward, dynamic)

        def run_out(*args, **kwargs):
            if self.times:
                self.times -= 1
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
            return compiled(*args, **kwargs)

        return run_out


def test_a_compile_out_of_memory_is_put_off_a_few_times_then_given_up(model, caplog):
    runner = runner_for(model, FakeGraphs())
    compiler = BackgroundCompiler(OutOfMemoryCompile(times=MAX_OUT_OF_MEMORY_COMPILES))
    with caplog.at_level(logging.INFO):
        for _ in range(MAX_OUT_OF_MEMORY_COMPILES):  # each time the next call queues it again
            run(model, compiler, (4, 4), wait_after=1)
        assert not runner.compile_failed and runner.out_of_memory_compiles == MAX_OUT_OF_MEMORY_COMPILES
        run(model, compiler, (4, 4, 4), wait_after=1)
    assert not runner.compile_failed and list(runner.kinds.values()) == ["compiled"], "the fourth got through"
    assert caplog.text.count("put off: out of memory") == MAX_OUT_OF_MEMORY_COMPILES

    model2 = Denoiser().eval()
    runner = runner_for(model2, FakeGraphs())
    compiler = BackgroundCompiler(OutOfMemoryCompile(times=99))
    for _ in range(MAX_OUT_OF_MEMORY_COMPILES + 1):
        run(model2, compiler, (4, 4), wait_after=1)
    assert runner.compile_failed, "a module that never fits stops trying"


def test_a_job_waiting_for_the_helpers_room_is_queued_again_by_a_later_call(model, monkeypatch):
    """Under a budget with no room for the compile helper now, nothing is compiled here (that would hold the
    compiler's lock for a minute, and swapped-in models could not capture graphs meanwhile): the job is
    dropped, and the first call after RETRY_HELPER_S queues it again."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    runner = runner_for(model, FakeGraphs())
    compile_fn = CountingCompile()
    compiler = BackgroundCompiler(compile_fn)
    waiting = [True]
    monkeypatch.setattr(compiler, "_compile_in_helper", lambda *job: waiting[0])
    run(model, compiler, (4, 4), wait_after=1)
    assert compile_fn.compiled == 0 and compiler.jobs_submitted == 1 and not runner.submitted
    assert compiler.waiting_for_room() == RETRY_HELPER_S, "what warmup waits for"
    run(model, compiler, (4, 4, 4))
    assert compiler.jobs_submitted == 1, "within RETRY_HELPER_S no call queues it again"
    clock[0] += RETRY_HELPER_S
    waiting[0] = False  # the room is there now
    run(model, compiler, (4,), wait_after=0)
    run(model, compiler, (4, 4))
    assert compiler.jobs_submitted == 2 and list(runner.kinds.values()) == ["compiled"]
    assert compiler.waiting_for_room() == 0.0


def test_a_compile_cut_short_at_exit_is_not_reported_as_a_failure(model, caplog, monkeypatch):
    """At interpreter exit inductor closes its worker pool under a running job ('SubprocPool closed')."""

    class Exiting:
        @staticmethod
        def is_alive():
            return False

    backend = FakeGraphs()
    runner = runner_for(model, backend)
    compiler = BackgroundCompiler(CountingCompile(fail=True))
    monkeypatch.setattr(threading, "main_thread", lambda: Exiting)
    with caplog.at_level(logging.WARNING):
        run(model, compiler, (3, 3), wait_after=1)
    assert not caplog.records and not runner.compile_failed


def test_no_capture_while_the_compiler_works(model):
    """Capturing a graph beside another thread's compilation is unsafe: the call runs without a new graph."""
    backend = FakeGraphs()
    runner = runner_for(model, backend)
    compiler = BackgroundCompiler(CountingCompile())
    held, done = threading.Event(), threading.Event()

    def hold():
        with compiler.lock:
            held.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    try:
        run(model, compiler, (2, 2, 2))
        assert backend.captures == 0 and runner.graphs == {}
    finally:
        done.set()
        thread.join()
    run(model, compiler, (2,))
    assert backend.captures == 1


def test_a_module_that_is_not_compiled_does_not_capture_while_another_compiles(model):
    """The text encoder gets graphs without a compiler of its own; a compiler working for the UNet must hold its
    capture back too (such a capture broke both) — any compiler in the process, even another Orchestrator's."""
    backend = FakeGraphs()
    runner = runner_for(model, backend)
    compiler = BackgroundCompiler(CountingCompile())
    with compiler.lock:  # re-entrant: held here as the worker thread would hold it
        held = threading.Event()
        result = {}

        def serve():
            held.set()
            result["out"] = run(model, None, (2, 2, 2))

        thread = threading.Thread(target=serve)
        thread.start()
        thread.join(30)
        assert held.is_set() and "out" in result
        assert backend.captures == 0 and runner.graphs == {}, "captured beside a working compiler"
    run(model, None, (2, 2))
    assert backend.captures == 1, "once the compiler is idle the graph is captured"


def test_an_offload_during_the_compile_puts_it_off_instead_of_failing_for_good(model, caplog):
    """Budget mode may offload a model while its compile runs (on the H200: 'Input type (torch.cuda.HalfTensor)
    and weight type (torch.HalfTensor) should be the same'); the compile is queued again on its next call."""

    class MovedMeanwhile(CountingCompile):
        def __call__(self, forward, dynamic=False):
            compiled = super().__call__(forward, dynamic)

            def first_run_meets_an_offload(*args, **kwargs):
                if self.calls == 0:
                    self.calls += 1
                    for param in model.parameters():  # what .to("cpu") and back does to the addresses
                        param.data = param.data.clone()
                    raise RuntimeError(
                        "Input type (torch.cuda.HalfTensor) and weight type (torch.HalfTensor) …"
                    )
                return compiled(*args, **kwargs)

            return first_run_meets_an_offload

    backend, compile_fn = FakeGraphs(), MovedMeanwhile()
    runner = runner_for(model, backend)
    compiler = BackgroundCompiler(compile_fn)
    with caplog.at_level(logging.WARNING):
        # eager, then the eager graph and a compile that meets a move
        run(model, compiler, (4, 4), wait_after=1)
        assert not runner.compile_failed and compiler.jobs_submitted == 1
        # the moved weights drop the graph, and the compile is queued again
        run(model, compiler, (4, 4), wait_after=1)
        assert compiler.jobs_submitted == 2
        run(model, compiler, (4, 4))
    assert list(runner.kinds.values()) == ["compiled"], "the second compile got through"
    assert not [r for r in caplog.records if r.levelname == "WARNING"], "a put-off compile is no failure"


def test_the_compile_helper_leaves_once_the_queue_is_empty(model):
    """The helper process holds a CUDA context and a copy of the module: it is stopped whenever the compiler has
    nothing left to do (the next job starts it again)."""

    class FakeHelper:
        closed = 0

        def close(self):
            self.closed += 1

    compiler = BackgroundCompiler(CountingCompile())
    compiler.helper = helper = FakeHelper()
    runner_for(model, FakeGraphs())
    run(model, compiler, (3, 3, 3), wait_after=1)
    assert helper.closed == 1 and not compiler.busy()


def test_moving_the_weights_drops_graphs_but_keeps_the_compiled_forward(model):
    backend, compile_fn = FakeGraphs(), CountingCompile()
    runner = runner_for(model, backend)
    compiler = BackgroundCompiler(compile_fn)
    run(model, compiler, (5, 5, 5), wait_after=1)
    release([model])  # what an offload to the CPU does first
    assert runner.graphs == {} and runner.compiled_keys
    captures = backend.captures
    run(model, compiler, (5, 5, 5))
    assert list(runner.kinds.values()) == ["compiled"] and backend.captures == captures + 1
    assert compile_fn.compiled == 1, "no second compile after a move"


def test_a_new_input_shape_gets_its_own_compile_in_the_background(model):
    backend, compile_fn = FakeGraphs(), CountingCompile()
    runner = runner_for(model, backend)
    compiler = BackgroundCompiler(compile_fn)
    with torch.inference_mode(), graphed([model], compiler=compiler):
        for batch in (2, 3):
            for _ in range(2):
                call(model, batch=batch)
            assert compiler.wait(30)  # a call that comes while it compiles captures nothing (next test)
        for batch in (2, 3):
            out = call(model, batch=batch)
    torch.testing.assert_close(out, expected(model, batch=3))
    assert len(runner.compiled_keys) == 2 and set(runner.kinds.values()) == {"compiled"}


def test_compile_flag_from_the_environment(monkeypatch, tmp_path):
    from orchestrator.engine import Orchestrator
    from orchestrator.settings import SWITCHES

    COMPILE_ENV = SWITCHES["compile"]

    def fastpath():  # the environment is read at the edge, by the Orchestrator
        return Orchestrator("Text2Image_cpu", weights="tiny", session_root=tmp_path).fastpath

    monkeypatch.setenv(COMPILE_ENV, "0")
    assert fastpath().compile_for({}) is False and fastpath().compile_for({"compile": True}) is True
    monkeypatch.delenv(COMPILE_ENV)
    assert fastpath().compile_for({}) is True and fastpath().compile_for({"compile": False}) is False


def orchestrators_inductor_compile(tmp_path):
    """The compile function of a new Orchestrator's fast path, as its background compiler calls it."""
    from orchestrator.engine import Orchestrator

    orch = Orchestrator("Text2Image_cpu", weights="tiny", session_root=tmp_path)
    return orch.fastpath.compiler.regions.compile_fn


def test_inductor_cache_lives_in_the_project_cache(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    monkeypatch.setenv("VISUAL_ORCHESTRATOR_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    cache_dir()  # what importing diffusers does: torch writes its /tmp default into the environment
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == os.path.abspath(default_cache_dir())
    orchestrators_inductor_compile(tmp_path)(lambda x: x + 1)  # torch.compile is lazy: nothing compiles here
    assert cache_dir() == str(tmp_path / "inductor"), "compiled code must survive a reboot, with the weights"


def test_a_chosen_inductor_cache_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    orchestrators_inductor_compile(tmp_path)(lambda x: x + 1)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


@pytest.mark.skipif(
    not (shutil.which("gcc") or shutil.which("cc")), reason="inductor's CPU backend needs a C compiler"
)
def test_real_inductor_compile_in_the_background_gives_the_eager_answer(model, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    backend = FakeGraphs()
    runner = runner_for(model, backend)
    compiler = BackgroundCompiler()  # torch.compile, inductor (caching where TORCHINDUCTOR_CACHE_DIR says)
    run(model, compiler, (6, 5, 4, 3), wait_after=1)
    assert not runner.compile_failed and list(runner.kinds.values()) == ["compiled"]
    assert (tmp_path / "inductor").is_dir(), "compiled code is cached on disk for the next start"


def test_graphs_made_without_a_compiler_are_compiled_once_one_is_given(model):
    backend, compile_fn = FakeGraphs(), CountingCompile()
    runner = runner_for(model, backend)
    run(model, None, (4, 4, 4))  # --no-compile, or the card used before compiling was turned on
    assert list(runner.kinds.values()) == ["eager"]
    compiler = BackgroundCompiler(compile_fn)
    run(model, compiler, (4, 4, 4), wait_after=0)
    assert list(runner.kinds.values()) == ["compiled"] and compile_fn.compiled == 1


def test_sigma_table_follows_the_timesteps_off_the_cpu():
    """On a GPU the table stays there (no blocking copy per step); "meta" stands in for the GPU here (UniPC builds
    its table on the CPU, so it can; Euler ancestral, measured on the H200, copies a device table back)."""
    diffusers = pytest.importorskip("diffusers")
    unipc = diffusers.UniPCMultistepScheduler()
    with scheduler.sigmas_on_device(unipc):
        unipc.set_timesteps(20, device="meta")
        assert unipc.sigmas.device.type == "meta" and unipc.timesteps.device.type == "meta"
        unipc.set_timesteps(20, device="cpu")
        assert unipc.sigmas.device.type == "cpu"
    assert "set_timesteps" not in vars(unipc), "the patch must not outlive the block"
    with scheduler.sigmas_on_device(unipc, enabled=False):
        unipc.set_timesteps(20, device="meta")
    assert unipc.sigmas.device.type == "cpu", "diffusers' own behaviour when the fast path is off"


def test_other_schedulers_are_left_alone():
    diffusers = pytest.importorskip("diffusers")
    ddim = diffusers.DDIMScheduler()
    with scheduler.sigmas_on_device(ddim):
        assert "set_timesteps" not in vars(ddim)


def test_a_model_built_during_a_trace_keeps_its_dtype_and_the_trace_succeeds():
    """Dynamo saves the default dtype before tracing and restores it after (then fails the compile if it changed);
    transformers sets it while it builds a model, so a BLIP loaded beside the UNet's compile could come out half
    float32. A compiled region's call holds TORCH_GLOBALS, and so does building a model."""
    import time

    tracing, failures = threading.Event(), []

    def slow_backend(gm, example_inputs):
        tracing.set()
        time.sleep(0.3)  # inductor takes seconds here
        return gm.forward

    class Block(torch.nn.Module):
        def forward(self, x):
            return x * 2 + 1

    block = Block()
    regions = RegionCompiler(compile_fn=lambda fn, dynamic=False: fn)
    region = RegionForward(block, torch.compile(Block.forward, backend=slow_backend, fullgraph=True), regions)

    def compile_thread():
        try:
            with regions.calling():  # as inside a compiled module forward, on the compiler's thread
                assert torch.equal(region(torch.ones(3)), torch.full((3,), 3.0))
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    worker = threading.Thread(target=compile_thread)
    worker.start()
    assert tracing.wait(30)
    with building_models():  # what the model manager does around a load
        torch.set_default_dtype(torch.float16)  # transformers' from_pretrained(dtype=float16)
        try:
            time.sleep(0.5)  # longer than the trace: without the lock, dynamo restores float32 in here
            built = torch.nn.Linear(2, 2).weight.dtype
        finally:
            torch.set_default_dtype(torch.float32)
    worker.join()
    assert failures == [] and built == torch.float16 and torch.get_default_dtype() == torch.float32
