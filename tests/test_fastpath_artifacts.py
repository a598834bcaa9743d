"""Restart without the cold compile (fastpath/artifacts.py) and what the panel says about compiling, on CPU.

The compiled-code file is checked for real with inductor's C++ backend: one process compiles a small function and
saves what it compiled, a second with an empty inductor cache loads the file and finds every graph in the caches.
A file from another GPU or torch, or a damaged one, is one log line and changes nothing. The compile state
(compiled / compiling / eager) is checked with the fake graphs and compile stand-in the other fast-path tests use.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_fastpath_compiler import CountingCompile
from test_fastpath_graphs import Denoiser, FakeGraphs, call

from foundation_models.fastpath import FastPath
from foundation_models.fastpath.artifacts import MAGIC, CompiledArtifacts, file_name, machine
from foundation_models.fastpath.compiler import BackgroundCompiler
from foundation_models.fastpath.graphs import graphed, runner_for
from foundation_models.fastpath.pipelines import compile_state

ROOT = Path(__file__).resolve().parents[1]
JOB = "0123456789abcdef" * 2  # a compile-helper job marker, as helper.py names them

# One process: compile f with inductor (CPU), then save or load the compiled-code file, and report the caches' counters.
SCRIPT = """
import json, logging, sys
from pathlib import Path
import torch
from torch._dynamo.utils import counters
from foundation_models.fastpath.artifacts import CompiledArtifacts
logging.basicConfig(level=logging.INFO)
mode, cache, file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
artifacts = CompiledArtifacts(file=file, cache_dir=cache)
loaded = artifacts.load() if mode == "load" else None
from foundation_models.fastpath.inductor import inductor_compile
def f(x, w):
    return torch.nn.functional.gelu(x @ w).sin() + 1
out = inductor_compile(f, cache_dir=cache)(torch.ones(4, 8), torch.ones(8, 8))
saved = artifacts.save([JOB]) if mode == "save" else None
print(json.dumps({"loaded": loaded and loaded.done, "saved": saved and saved.done, "sum": float(out.sum()),
                  "hits": counters["inductor"]["fxgraph_cache_hit"], "misses": counters["inductor"]["fxgraph_cache_miss"],
                  "aot_hits": counters["aot_autograd"]["autograd_cache_hit"]}))
""".replace("JOB", repr(JOB))


def run_script(mode: str, cache: Path, file: Path) -> dict:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # .ci/run's lowest torch after ours
    env = {**os.environ, "PYTHONPATH": path, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(cache), str(file)], capture_output=True,
                            text=True, timeout=240, env=env, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_new_process_on_an_empty_cache_finds_what_the_file_holds(tmp_path):
    file = tmp_path / "compiled.bin"
    first = run_script("save", tmp_path / "cache-a", file)
    assert first["saved"] and first["misses"] >= 1 and file.read_bytes().startswith(MAGIC)
    second = run_script("load", tmp_path / "cache-b", file)
    assert second["loaded"] and second["misses"] == 0 and second["hits"] >= 1 and second["aot_hits"] >= 1
    assert second["sum"] == first["sum"]
    assert (tmp_path / "cache-b" / "compile-helper" / JOB).exists(), "the helper is not started for its jobs"


def written(path: Path, header: dict, payload: bytes = b"torch's bytes") -> Path:
    import hashlib

    header = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload), **header}
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)
    return path


def load_logged(artifacts: CompiledArtifacts, caplog) -> tuple:
    with caplog.at_level(logging.INFO, logger="foundation_models.fastpath.artifacts"):
        outcome = artifacts.load()
    return outcome, [r for r in caplog.records if r.name == "foundation_models.fastpath.artifacts"]


def test_a_file_from_another_gpu_or_torch_is_set_aside_with_one_line(tmp_path, caplog, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: calls.append(data))
    file = written(tmp_path / "h100.bin", {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130"})
    outcome, records = load_logged(CompiledArtifacts(file=file, cache_dir=tmp_path / "cache"), caplog)
    assert not outcome.done and not calls, "nothing of it reaches torch's caches"
    assert [r.levelname for r in records] == ["WARNING"]
    message = records[0].getMessage()
    assert (
        "compiled on NVIDIA H100 80GB HBM3 with torch 2.11.0+cu130" in message
        and "compiling as usual" in message
    )
    assert torch.__version__ in message


def test_a_file_made_with_another_diffusers_is_set_aside_with_one_line(tmp_path, caplog, monkeypatch):
    from foundation_models.fastpath.artifacts import machine

    calls = []
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: calls.append(data))
    file = written(tmp_path / "here.bin", {**machine(), "diffusers": "0.1.0"})  # this GPU and torch
    outcome, records = load_logged(CompiledArtifacts(file=file, cache_dir=tmp_path / "cache"), caplog)
    assert not outcome.done and not calls, "code traced from another diffusers never runs"
    assert [r.levelname for r in records] == ["WARNING"]
    assert "compiled with diffusers 0.1.0, not this" in records[0].getMessage()


@pytest.mark.parametrize(
    "damage",
    [lambda d: d[: len(d) - 3], lambda d: b"PK\x03\x04" + d[4:], lambda d: d.replace(b'"bytes"', b'"byte')],
    ids=["cut short", "another format", "broken header"],
)
def test_a_damaged_file_is_one_line_and_compiles_as_usual(tmp_path, caplog, damage):
    file = written(tmp_path / "compiled.bin", machine())
    file.write_bytes(damage(file.read_bytes()))
    artifacts = CompiledArtifacts(file=file, cache_dir=tmp_path / "cache")
    outcome, records = load_logged(artifacts, caplog)
    assert not outcome.done and len(records) == 1 and records[0].levelname == "WARNING"
    assert "not a usable compiled-code file" in records[0].getMessage()
    assert artifacts.load() is outcome and len(caplog.records) == 1, "once per process"


def test_bytes_torch_cannot_read_are_one_line_too(tmp_path, caplog):
    file = written(tmp_path / "compiled.bin", machine(), payload=b"\x00\x01garbage")
    with caplog.at_level(logging.ERROR, logger="torch"):  # torch logs its own traceback at WARNING
        outcome = CompiledArtifacts(file=file, cache_dir=tmp_path / "cache").load()
    assert not outcome.done and "could not be loaded" in outcome.message


def test_the_default_file_is_named_for_the_gpu_and_torch_and_its_absence_is_silent(tmp_path, caplog):
    assert file_name({"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130"}) == (
        "nvidia-h100-80gb-hbm3-torch2.11.0-cu130.bin"
    )
    artifacts = CompiledArtifacts(folder=tmp_path / "compiled", cache_dir=tmp_path / "cache")
    assert artifacts.path() == tmp_path / "compiled" / file_name(machine())
    outcome, records = load_logged(artifacts, caplog)
    assert not outcome.done and not records, "no warmup ran yet: nothing to say"
    named, records = load_logged(CompiledArtifacts(file=tmp_path / "given.bin"), caplog)
    assert "No compiled-code file at" in named.message and records
    assert CompiledArtifacts().load() is None and CompiledArtifacts().save() is None


def test_the_compiler_loads_the_file_before_its_first_job(tmp_path, monkeypatch):
    loads = []
    artifacts = CompiledArtifacts(file=tmp_path / "none.bin")
    monkeypatch.setattr(artifacts, "_load", lambda device: loads.append(device) or SimpleNamespace(done=False,
                                                                                                    message=""))  # fmt: skip
    model = Denoiser().eval()
    runner_for(model, FakeGraphs())
    compiler = BackgroundCompiler(CountingCompile(), artifacts=artifacts)
    with torch.inference_mode(), graphed([model], compiler=compiler):
        for _ in range(3):
            call(model)
        assert compiler.wait(30)
    assert loads == [None], "once, before the job (a CPU job here: no CUDA device)"


class Gate(CountingCompile):
    """The compile stand-in, held at the compile until the test opens the gate."""

    def __init__(self, fail: bool = False):
        super().__init__(fail)
        self.open = threading.Event()

    def __call__(self, forward, dynamic=False):
        assert self.open.wait(30)
        return super().__call__(forward, dynamic)


def test_a_pipelines_state_goes_from_eager_to_compiling_to_compiled():
    unet = Denoiser().eval()
    pipe = SimpleNamespace(unet=unet)
    runner_for(unet, FakeGraphs())
    gate = Gate()
    compiler = BackgroundCompiler(gate)
    assert compile_state(pipe) == "eager"
    with torch.inference_mode(), graphed([unet], compiler=compiler):
        call(unet)
        assert compile_state(pipe) == "eager", "the first call runs eagerly and queues nothing"
        call(unet)  # captures the eager graph, queues the compile
        assert compile_state(pipe) == "compiling"
        gate.open.set()
        assert compiler.wait(30)
        assert compile_state(pipe) == "compiled"
    fastpath = FastPath(compile_fn=CountingCompile())
    assert (
        fastpath.compile_state(pipe) == "compiled" and fastpath.compile_state(pipe, compile=False) == "eager"
    )


def test_a_failed_compile_leaves_the_pipeline_eager():
    unet = Denoiser().eval()
    runner_for(unet, FakeGraphs())
    gate = Gate(fail=True)
    gate.open.set()
    compiler = BackgroundCompiler(gate)
    with torch.inference_mode(), graphed([unet], compiler=compiler):
        call(unet)
        call(unet)
        assert compiler.wait(30)
    assert compile_state(SimpleNamespace(unet=unet)) == "eager"


def test_the_manager_reports_each_loaded_models_compile_state(tmp_path):
    from orchestrator.cards import parse_cards
    from orchestrator.engine import Orchestrator

    class Model:
        compile_state = "compiling"

        def to(self, device):
            pass

    family = SimpleNamespace(name="fake", load=lambda ctx: Model(), load_component=None)
    cards = {"cards": {"Painter": {"family": "fake", "dtype": "float16", "vram_mb": 1, "tools": []},
                       "Other": {"family": "fake", "dtype": "float16", "vram_mb": 1, "tools": []}}}  # fmt: skip
    orch = Orchestrator("Painter_cpu,Other_cpu", cards=parse_cards(cards), families={"fake": family},
                        session_root=tmp_path, brain="rules")  # fmt: skip
    with orch.manager.use("Painter"):
        pass
    states = {s.card: s.compile_state for s in orch.manager.status()}
    assert states == {"Painter": "compiling", "Other": None}, "not loaded: nothing to say"
