"""Batching across sessions (issue 25): calls of one tool with the same settings that wait for a busy device run as
one pipeline call, each with its own prompt, seed, progress, image and error, as it would alone.

The device is held busy by the test (``manager.use`` holds its lock) until the calls have queued, so what batches
is decided by the test, not by timing. Tiny weights on the CPU: a batched picture's float math differs from the
lone call's in the last bits (the batched convolutions and matmuls sum in another order), which moved a few
8-bit values by 1 when measured (about 0.01% of them, max |diff| 1), so images are compared to within 1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._pytree import tree_unflatten

from foundation_models.fastpath.graphs import graph_batch, runner_for
from foundation_models.stable_diffusion import Picture, _Batched
from orchestrator.batching import Batcher
from orchestrator.cards import load_cards
from orchestrator.cli import common
from orchestrator.engine import Orchestrator
from orchestrator.settings import Settings

LOAD = "Text2Image_cpu,CannyText2Image_cpu"


@pytest.fixture(scope="module")
def orch(tmp_path_factory):
    with Orchestrator(
        LOAD, weights="tiny", brain="rules", session_root=tmp_path_factory.mktemp("sessions")
    ) as orch:
        yield orch


def together(orch, card: str, calls: list[tuple], queued: int | None = None) -> list:
    """``(session, tool, args[, report])`` calls started while the card's device is busy, then let go; their
    ToolCall records. Each call queues before the next starts (in this order), unless ``queued`` says how many of
    them will queue at all (the others fail before)."""
    records: list = [None] * len(calls)

    def call(i: int) -> None:
        session, tool, args, *report = calls[i]
        records[i] = session.call_tool(tool, args, *report)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    with orch.manager.use(card):  # loads the model and holds its device: the calls queue behind it
        for i, thread in enumerate(threads):
            thread.start()
            if queued is None:
                wait_until(lambda i=i: orch.batcher.waiting(card) > i)
        wait_until(lambda: orch.batcher.waiting(card) == (len(calls) if queued is None else queued))
    for thread in threads:
        thread.join()
    return records


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the calls did not queue"
        time.sleep(0.001)


def pixels(session, name: str) -> np.ndarray:
    return np.asarray(session.images.open(name), dtype=np.int16)


def assert_same_picture(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1, "same seed, same image (within the last bit of batched float math)"
    assert (a != b).mean() <= 0.001, "a value off by one here and there, never a picture that drifted"


def steps_of(reports: list) -> Callable[[], list]:
    return lambda: [(p.step, p.total) for p in reports if p.step is not None]


# -- the whole path, tiny weights ------------------------------------------------------------------
def test_calls_that_wait_for_a_busy_device_run_as_one_batch_each_as_it_would_alone(orch):
    sessions = [orch.new_session() for _ in range(4)]
    args = [{"prompt": f"a lighthouse number {i}", "seed": 10 + i, "negative_prompt": "fog" if i % 2 else None}
            for i in range(4)]  # fmt: skip
    reports: list[list] = [[] for _ in range(4)]
    before = orch.batcher.sizes[4]
    calls = together(
        orch, "Text2Image", [(s, "text2image", a, r.append) for s, a, r in zip(sessions, args, reports)]
    )
    assert [c.error for c in calls] == [None] * 4
    assert [c.batch for c in calls] == [4] * 4 and orch.batcher.sizes[4] == before + 1
    for i, call in enumerate(calls):
        assert call.as_dict()["batch"] == 4
        assert steps_of(reports[i])() == [(1, 2), (2, 2)], "each caller hears every step of its own call"
        (name,) = call.images
        assert sessions[i].images.lineage(name).seed == 10 + i and f"seed {10 + i}" in call.output
        assert all(name not in s.images for j, s in enumerate(sessions) if j != i)
    alone = orch.new_session()
    lone_pixels = []
    for i, call in enumerate(calls):
        lone = alone.call_tool("text2image", args[i])
        assert lone.batch == 1
        lone_pixels.append(pixels(alone, lone.images[0]))
        assert_same_picture(lone_pixels[i], pixels(sessions[i], call.images[0]))
    # each call got its own seed's noise, not a neighbour's: another seed's picture is far from it
    assert np.abs(lone_pixels[0] - pixels(sessions[1], calls[1].images[0])).mean() > 5


def test_calls_with_different_settings_run_in_separate_batches(orch):
    sessions = [orch.new_session() for _ in range(4)]
    sizes = [64, 128, 64, 128]
    calls = together(orch, "Text2Image", [(s, "text2image", {"prompt": "a boat", "seed": 1, "width": w})
                                          for s, w in zip(sessions, sizes)])  # fmt: skip
    assert [c.error for c in calls] == [None] * 4
    assert [c.batch for c in calls] == [2] * 4
    assert [Image.open(s.images.path(c.images[0])).size[0] for s, c in zip(sessions, calls)] == sizes


def test_a_bad_argument_is_its_callers_error_and_the_others_still_batch(orch):
    sessions = [orch.new_session() for _ in range(4)]
    args = [{"prompt": "a tree", "seed": 3}, {"prompt": "a tree", "width": "wide"}, {"prompt": "a bush", "seed": 4},
            {"prompt": "a rose", "seed": 5}]  # fmt: skip
    calls = together(orch, "Text2Image", [(s, "text2image", a) for s, a in zip(sessions, args)], queued=3)
    assert calls[1].error == "text2image: argument 'width' must be a whole number, got 'wide'."
    assert [calls[i].batch for i in (0, 2, 3)] == [3, 3, 3]
    assert all(calls[i].error is None and calls[i].images for i in (0, 2, 3))


def test_a_batch_that_fails_runs_again_in_halves_so_only_the_culprit_fails(orch, monkeypatch):
    with orch.manager.use("Text2Image") as sd:
        real = sd.generate_batch

    def picky(pictures, **kwargs):
        if any("thunder" in p.prompt for p in pictures):
            raise ValueError("this prompt breaks the pipeline")
        return real(pictures, **kwargs)

    monkeypatch.setattr(sd, "generate_batch", picky)
    sessions = [orch.new_session() for _ in range(4)]
    prompts = ["a cat", "a dog", "thunder", "a cow"]
    calls = together(
        orch, "Text2Image", [(s, "text2image", {"prompt": p, "seed": 2}) for s, p in zip(sessions, prompts)]
    )
    assert calls[2].error.startswith(
        "text2image failed unexpectedly (ValueError: this prompt breaks the pipeline)"
    )
    assert [(c.error, c.batch) for i, c in enumerate(calls) if i != 2] == [(None, 2), (None, 2), (None, 1)]


def test_out_of_memory_in_a_large_batch_splits_it_and_every_call_succeeds(orch, monkeypatch):
    with orch.manager.use("Text2Image") as sd:
        real = sd.generate_batch

    def small_gpu(pictures, **kwargs):
        if len(pictures) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return real(pictures, **kwargs)

    monkeypatch.setattr(sd, "generate_batch", small_gpu)
    sessions = [orch.new_session() for _ in range(4)]
    calls = together(
        orch,
        "Text2Image",
        [(s, "text2image", {"prompt": "a car", "seed": i}) for i, s in enumerate(sessions)],
    )
    assert [(c.error, c.batch) for c in calls] == [(None, 2)] * 4


def test_a_cancelled_member_stops_alone(orch):
    """A caller whose progress report raises (it went away) gets that error; the batch goes on for the others."""
    sessions = [orch.new_session() for _ in range(3)]

    def gone(progress) -> None:
        if progress.step:
            raise RuntimeError("the client went away")

    kept: list = []
    calls = together(orch, "Text2Image", [(sessions[0], "text2image", {"prompt": "a", "seed": 1}, kept.append),
                                          (sessions[1], "text2image", {"prompt": "b", "seed": 2}, gone),
                                          (sessions[2], "text2image", {"prompt": "c", "seed": 3})])  # fmt: skip
    assert "RuntimeError: the client went away" in calls[1].error and not calls[1].images
    assert [(c.error, c.batch, len(c.images)) for c in (calls[0], calls[2])] == [(None, 3, 1)] * 2
    assert steps_of(kept)() == [(1, 2), (2, 2)]


def test_controlnet_calls_batch_with_their_own_maps(orch):
    sessions = [orch.new_session() for _ in range(2)]
    rng = np.random.default_rng(0)
    maps = [
        s.upload(Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).convert("RGB"))
        for s in sessions
    ]
    args = [{"image": m, "prompt": f"a house {i}", "seed": i} for i, m in enumerate(maps)]
    calls = together(orch, "CannyText2Image", [(s, "canny2image", a) for s, a in zip(sessions, args)])
    assert [(c.error, c.batch) for c in calls] == [(None, 2)] * 2
    for session, a, call in zip(sessions, args, calls):
        lone = session.call_tool("canny2image", a)
        assert lone.batch == 1
        assert_same_picture(pixels(session, lone.images[0]), pixels(session, call.images[0]))


@pytest.mark.parametrize(
    "limit, batches, sizes", [(1, [1, 1, 1, 1, 1], {1: 5}), (2, [2, 2, 2, 2, 1], {2: 2, 1: 1})]
)
def test_max_batch_limits_each_pipeline_call_and_1_turns_batching_off(tmp_path, limit, batches, sizes):
    with Orchestrator("Text2Image_cpu", settings=Settings.from_env(weights="tiny", max_batch=limit), brain="rules",
                      session_root=tmp_path) as orch:  # fmt: skip
        sessions = [orch.new_session() for _ in range(5)]
        calls = together(
            orch,
            "Text2Image",
            [(s, "text2image", {"prompt": "a", "seed": i}) for i, s in enumerate(sessions)],
        )
        assert [(c.error, c.batch) for c in calls] == [(None, b) for b in batches], (
            "oldest first, at most the limit"
        )
        assert orch.batcher.sizes == sizes


class ShapeGraphs:
    """A stand-in for CUDA graphs on the CPU: capture keeps static copies of the inputs, replay copies the new
    inputs in and runs the forward on them, and both record the UNet batch they were made for."""

    def __init__(self):
        self.captured, self.replayed = [], []

    def ready(self) -> bool:
        return True

    def accepts(self, tensor) -> bool:
        return True

    def reset(self) -> None:
        pass

    def capture(self, fn, leaves, spec):
        static = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]
        self.captured.append(static[0].shape[0])
        args, kwargs = tree_unflatten(static, spec)
        return (fn, static, spec), fn(*args, **kwargs)

    def replay(self, captured, leaves):
        fn, static, spec = captured
        for buffer, value in zip(static, leaves):
            if isinstance(buffer, torch.Tensor):
                assert buffer.shape == value.shape, "a graph replayed for inputs of another shape"
                buffer.copy_(value)
        self.replayed.append(static[0].shape[0])
        args, kwargs = tree_unflatten(static, spec)
        return fn(*args, **kwargs)


def test_on_the_fast_path_each_batch_size_gets_its_own_graphs(tmp_path):
    """Graphs are captured per input shape: a batch of 4 (a UNet batch of 8 with guidance) captures its own and
    never replays the lone call's (batch 2), and replaying gives the eager pictures."""
    tiny = Settings.from_env(weights="tiny", compile=False)  # a compile would hold captures off meanwhile
    with Orchestrator("Text2Image_cpu", settings=tiny, brain="rules", session_root=tmp_path) as fresh:
        with fresh.manager.use("Text2Image") as sd:
            backend = ShapeGraphs()
            runner_for(sd.pipe.unet, backend)  # what the CUDA backend would be on a GPU
            settings = {"width": 64, "height": 64, "steps": 2, "guidance_scale": 7.5}
            pictures = [Picture(f"a kite {i}", "", 20 + i) for i in range(4)]
            lone = [sd.generate_batch(pictures[:1], **settings) for _ in range(2)]  # eager, then capture
            # a new shape: eager, capture, replay, as if it were the first call
            batched = [sd.generate_batch(pictures, **settings) for _ in range(3)]
            assert backend.captured == [2, 8] and backend.replayed == [2, 2, 8, 8, 8, 8]
            sd.fast = False
            eager = sd.generate_batch(pictures, **settings)
    for graphed_run in batched:
        assert [np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(graphed_run, eager)] == [
            True
        ] * 4
    assert np.array_equal(np.asarray(lone[0][0]), np.asarray(lone[1][0]))


def test_where_graphs_run_a_pipeline_takes_few_batch_sizes_elsewhere_all_that_wait(orch):
    fast_path = orch.fastpath
    on_gpu = SimpleNamespace(fast=True, pipe=SimpleNamespace(device=torch.device("cuda")), fastpath=fast_path)
    assert _Batched.batch_size(on_gpu, 7, 8) == 4 and _Batched.batch_size(on_gpu, 9, 8) == 8
    assert _Batched.batch_size(SimpleNamespace(**{**vars(on_gpu), "fast": False}), 7, 8) == 7  # --no-fast
    with orch.manager.use("Text2Image") as sd:
        assert sd.batch_size(7, 8) == 7, "on the CPU nothing is captured: every waiting call joins"


# -- the batcher alone, with a model that records its calls ----------------------------------------
class Recorder:
    """A model that makes ``item * 10`` and records each call's items; ``graphs``: the CUDA-graph sizes."""

    def __init__(self, graphs: bool = False):
        self.graphs, self.calls = graphs, []

    def batch_size(self, waiting: int, limit: int) -> int:
        return graph_batch(waiting, limit) if self.graphs else min(waiting, limit)

    def generate_batch(self, items, progress=None, **settings):
        self.calls.append(list(items))
        return [item * 10 for item in items]


class Devices:
    """The manager's side: one lock per device (held by the test to make calls queue), a model, loads counted."""

    def __init__(self, model, fail_loads: int = 0):
        self.model, self.lock, self.fail_loads = model, threading.RLock(), fail_loads

    @contextmanager
    def use(self, card, report=None):
        with self.lock:
            if self.fail_loads:
                self.fail_loads -= 1
                raise OSError("disk on fire")
            yield self.model


def run_many(batcher: Batcher, devices: Devices, items: list, settings=None) -> list:
    """Each item's call in its own thread, all queued behind the held device; (result or error, batch) each.
    ``settings``: every call's, or a list of each call's own."""
    out: list = [None] * len(items)
    each = settings if isinstance(settings, list) else [settings or {"steps": 2}] * len(items)

    def call(i: int) -> None:
        try:
            out[i] = batcher.run("T2I", items[i], each[i])
        except Exception as exc:
            out[i] = (type(exc).__name__, 0)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(items))]
    with devices.lock:
        for i, thread in enumerate(threads):
            thread.start()
            while batcher.waiting() < i + 1:  # arrival order is the items' order
                time.sleep(0.001)
    for thread in threads:
        thread.join()
    return out


def test_where_graphs_are_captured_batches_take_few_sizes_and_the_rest_waits_for_the_next():
    assert [graph_batch(n, 8) for n in range(1, 11)] == [1, 2, 2, 4, 4, 4, 4, 8, 8, 8]
    assert [graph_batch(n, 6) for n in (5, 6, 7)] == [4, 6, 6]
    model = Recorder(graphs=True)
    batcher = Batcher(Devices(model), lambda card: 8)
    assert run_many(batcher, batcher._devices, list(range(7))) == [(0, 4), (10, 4), (20, 4), (30, 4), (40, 2),
                                                                  (50, 2), (60, 1)]  # fmt: skip
    assert model.calls == [[0, 1, 2, 3], [4, 5], [6]], "oldest first"


def test_without_graphs_every_waiting_call_joins_up_to_the_limit():
    model = Recorder()
    batcher = Batcher(Devices(model), lambda card: 3)
    assert [batch for _, batch in run_many(batcher, batcher._devices, list(range(7)))] == [
        3,
        3,
        3,
        3,
        3,
        3,
        1,
    ]
    assert batcher.sizes == {3: 2, 1: 1}


def test_calls_that_differ_in_size_steps_guidance_or_scheduler_never_share_a_pipeline_call():
    model = Recorder()
    batcher = Batcher(Devices(model), lambda card: 8)
    base = {"width": 64, "height": 64, "steps": 20, "guidance_scale": 7.5, "scheduler": "UniPC"}
    changes = [
        {},
        {"width": 128},
        {"steps": 30},
        {"guidance_scale": 5.0},
        {"scheduler": "Euler"},
        {},
        {"steps": 30},
    ]
    out = run_many(batcher, batcher._devices, list(range(7)), [{**base, **c} for c in changes])
    assert [batch for _, batch in out] == [2, 1, 2, 1, 1, 2, 2]
    assert sorted(model.calls) == [[0, 5], [1], [2, 6], [3], [4]]


def test_a_failed_load_is_each_callers_own_error_and_the_next_in_line_tries_again():
    model = Recorder()
    devices = Devices(model, fail_loads=1)
    batcher = Batcher(devices, lambda card: 8)
    assert run_many(batcher, devices, [1, 2, 3]) == [("OSError", 0), (20, 2), (30, 2)]
    assert batcher.waiting() == 0


def test_a_lone_call_never_waits_for_company_even_with_a_wait():
    batcher = Batcher(Devices(Recorder()), lambda card: 8, wait_s=30.0)
    started = time.monotonic()
    assert [batcher.run("T2I", i, {}) for i in range(3)] == [(0, 1), (10, 1), (20, 1)]
    assert time.monotonic() - started < 5


def test_with_a_wait_sessions_calling_in_a_row_stay_in_one_batch():
    """Two callers batched together call again; the first one back waits (up to wait_s) for the other."""
    model = Recorder()
    devices = Devices(model)
    batcher = Batcher(devices, lambda card: 8, wait_s=30.0)
    assert run_many(batcher, devices, [1, 2]) == [(10, 2), (20, 2)]
    again: list = [None, None]
    first = threading.Thread(target=lambda: again.__setitem__(0, batcher.run("T2I", 3, {"steps": 2})))
    first.start()
    while not model.calls[1:] and batcher.waiting() < 1:
        time.sleep(0.001)
    again[1] = batcher.run("T2I", 4, {"steps": 2})
    first.join()
    assert again == [(30, 2), (40, 2)] and model.calls[1] == [3, 4]


# -- settings -------------------------------------------------------------------------------------
def test_max_batch_comes_from_the_environment_the_flag_and_the_card():
    assert Settings.from_env({}).max_batch == 8 and Settings.from_env({}).batch_wait_ms == 0
    env = {"VISUAL_ORCHESTRATOR_MAX_BATCH": "3", "VISUAL_ORCHESTRATOR_BATCH_WAIT_MS": "20"}
    assert (Settings.from_env(env).max_batch, Settings.from_env(env).batch_wait_ms) == (3, 20.0)
    assert Settings.from_env({"VISUAL_ORCHESTRATOR_MAX_BATCH": "0"}).max_batch == 8
    with pytest.raises(ValueError, match="max_batch must be a whole number of at least 1"):
        Settings(max_batch=0)
    parser = common.argparse.ArgumentParser()
    common.add_common_arguments(parser)
    args = parser.parse_args(["--max-batch", "2", "--batch-wait-ms", "15"])
    assert (common.settings_from_args(args).max_batch, common.settings_from_args(args).batch_wait_ms) == (
        2,
        15.0,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-batch", "0"])
    cards = load_cards()
    assert Orchestrator("Text2Image_cpu", cards=cards, settings=Settings.from_env(max_batch=4),
                        brain="rules").max_batch("Text2Image") == 4  # fmt: skip
    cards.cards["Text2Image"] = replace(
        cards["Text2Image"], options={**cards["Text2Image"].options, "max_batch": 2}
    )
    assert Orchestrator("Text2Image_cpu", cards=cards, settings=Settings.from_env(max_batch=4),
                        brain="rules").max_batch("Text2Image") == 2  # fmt: skip
