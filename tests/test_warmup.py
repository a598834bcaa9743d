"""``python -m orchestrator warmup``: every tool loaded and called, the compiler waited for on CUDA only, exit codes."""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from served_app import free_port

from foundation_models.family import Family, family_module
from orchestrator import cli
from orchestrator.cards import load_cards, parse_cards
from orchestrator.cli import warmup as cli_warmup
from orchestrator.devices import CPU, cuda_device
from orchestrator.engine import Orchestrator
from orchestrator.settings import SWITCHES, Settings
from orchestrator.toolbox import all_tools
from orchestrator.toolbox.control import MAX_GREY_CHROMA
from orchestrator.tools import Param, Tool
from orchestrator.warmup import edge_map, sample_args, synthetic_picture, warm_up

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--weights", "tiny", "--load", "Text2Image_cpu,ImageCaptioning_cpu"]


def test_tiny_cpu_warmup_of_all_27_cards_runs_every_tool():
    """A fresh install's check: every tool takes warmup's drawn picture (or its edge map) and runs."""
    cards = load_cards()
    offline = [c for c in cards.cards.values() if not family_module(c.family).warmup.network]  # not the web
    cards = replace(cards, cards={c.name: c for c in offline})
    load = ",".join(f"{name}_cpu" for name in cards.names())
    command = [sys.executable, "-m", "orchestrator", "warmup", "--weights", "tiny", "--load", load, "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    rows = {row["tool"]: row for row in report["tools"]}
    assert set(rows) == {tool.name for tool in all_tools(cards)}
    for row in rows.values():
        assert row["device"] == "cpu" and row["error"] is None, row
        assert row["first_seconds"] > 0 and row["ready_seconds"] > 0, row
    assert rows["text2image"]["card"] == "Text2Image"
    assert (
        not report["compile_ahead"]
        and not report["timed_out"]
        and "nothing compiles off CUDA" in report["note"]
    )
    assert report["inductor_cache"] == str(Path(os.environ["VISUAL_ORCHESTRATOR_CACHE"]) / "inductor")
    assert "text2image (Text2Image on cpu): call 1/2" in result.stderr  # progress goes to stderr


def test_the_app_with_warmup_serves_at_once_and_loads_every_tool_in_the_background(tmp_path):
    port = free_port()
    command = [sys.executable, "gradio_app.py", "--load", "Image2Canny_cpu,Text2Image_cpu", "--weights", "tiny",
               "--brain", "rules", "--port", str(port), "--session-dir", str(tmp_path), "--warmup"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen, served, finished = [], False, None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (served and finished) and process.poll() is None:
            try:
                seen.append(lines.get(timeout=0.5))
                finished = finished or next((line for line in seen if "warm-up finished" in line), None)
            except queue.Empty:
                pass
            if not served:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                        served = response.status == 200
                except OSError:
                    pass
    finally:
        process.terminate()
        process.wait(timeout=30)
    output = "".join(seen)
    assert served, output[-3000:]
    assert finished and "2 of 2 tools ready" in finished, output[-3000:]
    assert "loaded Text2Image on cpu" in output and "warm-up: image2canny" in output


def test_an_unknown_tool_exits_2_and_names_the_available_ones(capsys):
    assert cli.main(["warmup", *TINY, "--tools", "text2image,nosuch"]) == 2
    err = capsys.readouterr().err
    assert "no tool named 'nosuch'" in err and "available: text2image, image_captioning" in err


def test_a_failing_tool_exits_1_with_its_error_and_the_others_are_still_warmed(capsys, tmp_path):
    # hub weights, offline, nothing downloaded: Text2Image's checkpoint is missing; Image2Canny needs none.
    argv = ["warmup", "--load", "Text2Image_cpu,Image2Canny_cpu", "--model-dir", str(tmp_path)]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    table = {
        line.split()[0]: line for line in captured.out.splitlines() if line.startswith(("text2", "image2"))
    }
    assert "Checkpoint stable-diffusion-v1-5/stable-diffusion-v1-5 is n" in table["text2image"]
    first, ready, compiled, error = table["image2canny"].split()[3:]
    assert float(first) >= 0 and float(ready) >= 0 and compiled == error == "-"
    assert "1 of 2 tools failed" in captured.out
    assert (
        "error: text2image: Checkpoint stable-diffusion-v1-5/stable-diffusion-v1-5 is not in" in captured.err
    )
    assert "python -m orchestrator download --load Text2Image_cpu" in captured.err


# -- the compiler wait, with a fake card, a fake CUDA device and a fake compiler (no GPU needed) ------------------
FAKE_CARDS = {"cards": {"Painter": {"family": "fake", "dtype": "float16", "vram_mb": 100, "tools": []}}}


def declared(fake) -> Family:
    """A test family object as the manager takes families: its FAMILY declaration."""
    return Family("fake", fake.load, getattr(fake, "load_component", None))


class FakeFamily:
    class Model:
        def to(self, device: str) -> None:
            pass

    def load(self, ctx):
        return self.Model()


class FakeCompiler:
    """The background compiler as warm_up sees it: jobs queued by the tool's calls, done by ``wait``."""

    def __init__(self, finishes: bool):
        self.finishes, self.waits, self.jobs_submitted, self.pending = finishes, [], 0, 0

    def submit(self) -> None:
        self.jobs_submitted += 1
        self.pending += 1

    def busy(self) -> bool:
        return self.pending > 0

    def waiting_for_room(self) -> float:
        return 0.0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if self.finishes:
            self.pending = 0
        return self.finishes

    def load_artifacts(self, device=None):
        return None  # no compiled-code file in these tests

    def prefetch(self, device) -> None:
        pass  # ditto

    def regions_ahead(self) -> dict:
        return {}


@pytest.fixture(autouse=True)
def fast_path_defaults(monkeypatch):
    for name in (SWITCHES["fast"], SWITCHES["compile"], "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)  # restored afterwards: warm_up points inductor at our cache


def fake_orchestrator(device: str, tmp_path: Path, compiler: FakeCompiler | None = None, submit_on=(2,),
                      **options) -> tuple[Orchestrator, list[dict]]:  # fmt: skip
    """An orchestrator with one tool, ``paint``, whose calls number ``submit_on`` queue a compile (the fast
    path's second call does; a later one does too when its capture was put off while the compiler was busy)."""
    calls: list[dict] = []

    def paint(ctx, image, prompt):
        with ctx.model():
            calls.append({"image": image, "prompt": prompt})
        if compiler is not None and len(calls) in submit_on:
            compiler.submit()
        return "painted"

    orch = Orchestrator(f"Painter_{device}", cards=parse_cards(FAKE_CARDS), devices=[CPU, cuda_device(0, 1_000)],
                        families={"fake": declared(FakeFamily())}, session_root=tmp_path, brain="rules",
                        settings=Settings.from_env(**options))  # fmt: skip
    params = (Param("image", "image", "a picture", True), Param("prompt", str, "what to paint", True))
    orch.tools = {"paint": Tool("paint", "Painter", "Paint.", params, paint)}
    return orch, calls


def test_on_cuda_it_waits_for_the_compiler_then_times_a_compiled_call(tmp_path):
    compiler = FakeCompiler(finishes=True)
    orch, calls = fake_orchestrator("cuda:0", tmp_path, compiler)
    report = warm_up(orch, timeout=12.5, compiler=compiler)
    # calls 1-2, wait, call 3 (queues nothing: done), then the timed call
    assert len(compiler.waits) == 1 and 0 < compiler.waits[0] <= 12.5 and len(calls) == 4
    assert report.compile_ahead and report.exit_code == 0
    [row] = report.rows
    assert (row.device, row.error) == ("cuda:0", None) and row.first_seconds > 0 and row.ready_seconds > 0
    assert calls[0]["prompt"] and calls[0]["image"].startswith("image/")
    assert report.compiled_saved and report.as_dict()["tools"][0]["compile_state"] is None  # a fake model


def test_warmup_loads_the_compiled_code_first_and_saves_it_as_it_ends(tmp_path, monkeypatch, capsys):
    from foundation_models.fastpath.artifacts import Outcome

    compiler = FakeCompiler(finishes=True)
    orch, calls = fake_orchestrator("cuda:0", tmp_path, compiler, compiled_file=tmp_path / "given.bin")
    assert orch.fastpath.artifacts.path() == tmp_path / "given.bin"
    done = []
    monkeypatch.setattr(orch.fastpath, "load_compiled", lambda device: done.append(("load", device, len(calls))) or
                        Outcome("given.bin", True, "Loaded 3 compiled-code entries from given.bin.", 3))  # fmt: skip
    monkeypatch.setattr(orch.fastpath, "save_compiled", lambda device: done.append(("save", device, len(calls))) or
                        Outcome("given.bin", True, "Saved 5 compiled-code entries to given.bin.", 5))  # fmt: skip
    monkeypatch.setattr(cli_warmup, "orchestrator_from_args", lambda args: orch)
    orch.fastpath.compiler = compiler
    assert cli.main(["warmup", "--load", "Painter_cuda:0", "--compiled", str(tmp_path / "given.bin")]) == 0
    assert done == [("load", "cuda:0", 0), ("save", "cuda:0", 4)], (
        "loaded before the first call, saved after the last"
    )
    out = capsys.readouterr().out
    assert "Loaded 3 compiled-code entries" in out and "Saved 5 compiled-code entries to given.bin." in out
    assert " compile " in out.splitlines()[0] + " "


def test_calls_that_queue_more_compiles_are_waited_for_again(tmp_path):
    compiler = FakeCompiler(finishes=True)
    orch, calls = fake_orchestrator("cuda:0", tmp_path, compiler, submit_on=(2, 3, 4))
    report = warm_up(orch, timeout=60, compiler=compiler)
    # calls 1-2, wait, 3 queues, wait, 4 queues, wait, 5 queues nothing, then the timed call
    assert len(compiler.waits) == 3 and len(calls) == 6 and report.exit_code == 0 and not compiler.busy()


def test_a_compile_waiting_for_the_helpers_room_is_called_for_again(tmp_path):
    """Under a VRAM budget a compile may wait for the helper's room: warm_up does not call it done, but calls
    again once it may be queued (and that call's compile is waited for)."""

    class Waiting(FakeCompiler):
        def __init__(self):
            super().__init__(finishes=True)
            self.waiting = [0.05, 0.0, 0.0]

        def waiting_for_room(self) -> float:
            return self.waiting.pop(0) if self.waiting else 0.0

    compiler = Waiting()
    orch, calls = fake_orchestrator("cuda:0", tmp_path, compiler, submit_on=(2, 4))
    report = warm_up(orch, timeout=60, compiler=compiler)
    # calls 1-2, wait, 3 (its compile waits for room), sleep, 4 queues it again, wait, 5 queues nothing, timed
    assert len(calls) == 6 and len(compiler.waits) == 3 and report.exit_code == 0


def test_off_cuda_nothing_is_waited_for(tmp_path):
    compiler = FakeCompiler(finishes=True)
    orch, calls = fake_orchestrator("cpu", tmp_path, compiler)
    report = warm_up(orch, compiler=compiler)
    assert compiler.waits == [] and len(calls) == 2 and not report.compile_ahead and report.exit_code == 0
    assert "nothing compiles off CUDA" in report.note


def test_without_the_compiler_each_tool_is_called_once_and_nothing_is_waited_for(tmp_path):
    compiler = FakeCompiler(finishes=True)
    orch, calls = fake_orchestrator("cuda:0", tmp_path, compiler, compile=False)
    report = warm_up(orch, compiler=compiler)
    assert compiler.waits == [] and len(calls) == 1 and report.exit_code == 0
    assert "nothing to compile ahead" in report.note and report.rows[0].ready_seconds is None


def test_a_compile_that_outlasts_the_timeout_exits_1(tmp_path, monkeypatch, capsys):
    compiler = FakeCompiler(finishes=False)
    orch, calls = fake_orchestrator("cuda:0", tmp_path, compiler)
    orch.fastpath.compiler = compiler  # the compiler the CLI's warm-up waits for: the orchestrator's own
    monkeypatch.setattr(cli_warmup, "orchestrator_from_args", lambda args: orch)
    assert cli.main(["warmup", "--load", "Painter_cuda:0", "--timeout", "5"]) == 1
    captured = capsys.readouterr()
    assert (
        len(compiler.waits) == 1 and 0 < compiler.waits[0] <= 5 and len(calls) == 2
    )  # no more calls meanwhile
    assert "did not finish within 5 s" in captured.out and "did not finish within 5 s" in captured.err
    assert str(Path(os.environ["VISUAL_ORCHESTRATOR_CACHE"]) / "inductor") in captured.out


def test_every_tool_gets_arguments_and_the_controlnets_a_grey_map():
    cards = load_cards()
    picture = synthetic_picture()
    edges = np.asarray(edge_map(picture), dtype=float)
    assert picture.size == (512, 512) and (edges.max(axis=2) - edges.min(axis=2)).mean() <= MAX_GREY_CHROMA
    assert 0.01 < (edges > 0).mean() < 0.5  # outlines, not a blank or a full page
    for tool in all_tools(cards):
        condition_map = family_module(cards[tool.card].family).warmup.condition_map
        args = sample_args(tool, "image/pic.png", (512, 512), "image/map.png", condition_map)
        assert {p.name for p in tool.params if p.required} <= set(args), tool.name
        if cards[tool.card].family == "controlnet":
            assert args["image"] == "image/map.png", tool.name
    outpaint = next(t for t in all_tools(cards) if t.name == "outpainting")
    assert sample_args(outpaint, "image/pic.png", (512, 384))["width"] > 512


def test_the_apps_background_warmup_logs_a_failing_tool_and_finishes(tmp_path, caplog):
    from orchestrator.errors import ToolError
    from orchestrator.warmup import warm_up_in_background

    orch, calls = fake_orchestrator("cpu", tmp_path)

    def broken(ctx, image, prompt):
        raise ToolError("the brush is missing")

    orch.tools["broken"] = Tool("broken", "Painter", "Break.", orch.tools["paint"].params, broken)
    with caplog.at_level(logging.INFO, logger="orchestrator.warmup"):
        warm_up_in_background(orch).join(60)
    messages = [record.getMessage() for record in caplog.records]
    assert any("broken failed: the brush is missing" in m for m in messages), messages
    assert any("warm-up finished" in m and "1 of 2 tools ready" in m for m in messages), messages
    assert len(calls) == 2  # paint still warmed: load + eager, then its graph call
