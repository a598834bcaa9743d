"""Regions compiled ahead (fastpath/precompiled.py): a restarted process serves compiled calls without tracing.

Checked for real with inductor's C++ backend on two small diffusers ResnetBlock2D blocks: one process compiles them
region by region, as the fast path does, and saves the compiled-code file; a new process with an empty inductor
cache loads it and runs the compiled forward with dynamo tracing nothing. A region whose guards do not hold for a
block (an attribute set after its key was made), bytes another torch cannot read and an older file are each one
log line, and the call still gets the right answer.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from foundation_models.fastpath.artifacts import MAGIC, CompiledArtifacts, machine, read
from foundation_models.fastpath.compiler import BackgroundCompiler
from foundation_models.fastpath.precompiled import PrecompiledRegions, block_digest, region_key

ROOT = Path(__file__).resolve().parents[1]


class Net(torch.nn.Module):
    """Three diffusers blocks with glue between them, as in a UNet: two resnets and a transformer, whose attention
    processor dynamo guards by its code's id (the script's processes import it from here)."""

    def __init__(self, groups: int = 4, scale: float = 1.0):
        super().__init__()
        self.a = ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=16, groups=groups,
                               output_scale_factor=scale)  # fmt: skip
        self.b = ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=16, groups=groups,
                               output_scale_factor=scale)  # fmt: skip
        self.c = Transformer2DModel(num_attention_heads=2, attention_head_dim=4, in_channels=8, norm_num_groups=4,
                                    cross_attention_dim=16)  # fmt: skip

    def forward(self, x, t):
        y = self.b(self.a(x, t) * 2, t)
        return self.c(y, encoder_hidden_states=t.unsqueeze(1), return_dict=False)[0]


# One process: compile Net's regions through the background compiler's region compiler, then save or load the file.
SCRIPT = """
import json, sys, time
import torch
from pathlib import Path
from torch._dynamo.utils import counters
from foundation_models.fastpath.artifacts import CompiledArtifacts
from foundation_models.fastpath.compiler import BackgroundCompiler
from test_fastpath_precompiled import Net
mode, cache, file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
torch._dynamo.config.enable_aot_compile = False  # as torch 2.11 has it: the fast path turns it on for its compiles
torch.manual_seed(0)
net = Net().eval()
x, t = torch.randn(1, 8, 8, 8), torch.randn(1, 16)
compiler = BackgroundCompiler(cache_dir=cache, artifacts=CompiledArtifacts(file=file, cache_dir=cache))
out = {"message": compiler.load_artifacts().message if mode == "load" else None}
forward = compiler.compiled_forward(net.forward)
with torch.inference_mode():
    started = time.perf_counter()
    y = forward(x, t)
    out["first_call_s"] = time.perf_counter() - started
    out["max_diff"] = float((y - Net.forward(net, x, t)).abs().max())
out["traced"] = counters["stats"]["unique_graphs"]
if mode == "save":
    out["message"] = compiler.artifacts.save([], regions=compiler.regions_ahead()).message
print(json.dumps(out))
"""


def run_script(mode: str, cache: Path, file: Path) -> dict:
    env = {
        **os.environ,
        # the caller's path after ours: .ci/run puts the lowest torch there
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        "TORCHINDUCTOR_CACHE_DIR": str(cache),
    }
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(cache), str(file)], capture_output=True,
                            text=True, timeout=300, env=env, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("precompiled")
    file = folder / "compiled.bin"
    first = run_script("save", folder / "cache-a", file)
    assert first["traced"] >= 1 and first["max_diff"] < 1e-5
    # the first resnet's input is the caller's tensor, the second's one made in inference mode: two signatures;
    # and the transformer's
    assert "and 3 regions compiled ahead" in first["message"], first["message"]
    assert any(key.startswith("diffusers.models.transformers.") for key in read(file)[2]), (
        "the transformer too"
    )
    return file


def test_a_new_process_given_the_file_traces_nothing_before_its_compiled_call(saved, tmp_path):
    second = run_script("load", tmp_path / "empty-cache", saved)
    assert "and 3 regions compiled ahead" in second["message"]
    assert second["traced"] == 0, "dynamo traced a region the file holds"
    assert second["max_diff"] < 1e-5


def blobs(file: Path) -> dict[str, bytes]:
    return read(file)[2]


def test_a_region_whose_guards_do_not_hold_compiles_as_usual_and_answers_right(saved, caplog):
    other = Net().eval()
    for block in (other.a, other.b):  # the key is made, then an attribute is set that it does not see again
        block_digest(block)
        block.output_scale_factor = 2.0
    x, t = torch.randn(1, 8, 8, 8), torch.randn(1, 16)
    compiler = BackgroundCompiler()
    assert compiler.regions.ahead.load(blobs(saved)) == 3
    forward = compiler.compiled_forward(other.forward)
    with (
        caplog.at_level(logging.INFO, logger="foundation_models.fastpath.precompiled"),
        torch.inference_mode(),
    ):
        y = forward(x, t)
        expected = Net.forward(other, x, t)
    assert float((y - expected).abs().max()) < 1e-5
    misfits = [r.getMessage() for r in caplog.records if "does not fit this ResnetBlock2D" in r.getMessage()]
    assert misfits and "output_scale_factor" in misfits[0], "the line names the guard that failed"
    assert len(compiler.regions.ahead) == 1, (
        "the resnets' do not fit and are dropped; the transformer's stays"
    )


def test_bytes_another_torch_cannot_read_are_one_line_and_the_rest_loads(saved, caplog):
    regions = blobs(saved)
    first = sorted(regions)[0]
    regions[first] = b"not a compiled function"
    ahead = PrecompiledRegions()
    with caplog.at_level(logging.WARNING, logger="foundation_models.fastpath.precompiled"):
        assert ahead.load(regions) == 2
    assert len(caplog.records) == 1 and "could not be loaded" in caplog.records[0].getMessage()
    assert not ahead.has(first)


def test_the_file_keeps_its_regions_and_an_older_file_is_one_line(saved, tmp_path, caplog):
    header, cache, regions = read(saved)
    assert header["regions"] and [key for key, _ in header["regions"]] == sorted(regions)
    assert cache and len(cache) == header["cache_bytes"]
    older = tmp_path / "v1.bin"
    older.write_bytes(saved.read_bytes().replace(MAGIC, b"visual-orchestrator compiled code v1\n", 1))
    with caplog.at_level(logging.INFO, logger="foundation_models.fastpath.artifacts"):
        outcome = CompiledArtifacts(file=older, cache_dir=tmp_path / "cache").load()
    assert not outcome.done and "an older version of this program made it" in outcome.message
    assert header["gpu"] == machine()["gpu"]


def test_a_region_key_names_the_class_shapes_and_kind_of_tensor():
    block = ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=16, groups=4)
    x, t = torch.randn(1, 8, 8, 8), torch.randn(1, 16)
    with torch.inference_mode():
        key = region_key(block, (x, t), {})
        inference = region_key(block, (torch.randn(1, 8, 8, 8), t), {})
    assert key.startswith("diffusers.models.resnet.ResnetBlock2D|") and "(1, 8, 8, 8)/(512, 64, 8, 1)" in key
    assert inference != key, "guards tell an inference tensor from another: so does the key"
    assert region_key(block, (x, t), {"scale": 1.0}) != region_key(block, (x, t), {"scale": 2.0})
    other = ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=16, groups=2)
    assert region_key(other, (x, t), {}) != key, "another group count: a key of its own, not a misfit"
    with torch.inference_mode():
        twin = ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=16, groups=4)
        assert region_key(twin, (x, t), {}) == key, (
            "another block of the same configuration finds the same code"
        )
        scaled = ResnetBlock2D(
            in_channels=8, out_channels=8, temb_channels=16, groups=4, output_scale_factor=2.0
        )
        assert region_key(scaled, (x, t), {}) != key, "another plain attribute: a key of its own"
    assert region_key(block.half(), (x, t), {}) != key, "half-precision weights: a key of its own"
    assert region_key(block, (x, object()), {}) is None, (
        "an input that cannot be rebuilt: never compiled ahead"
    )


def test_a_torch_without_aot_compile_says_in_the_save_that_a_restart_still_traces(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from test_fastpath_compiler import CountingCompile

    from foundation_models.fastpath import FastPath

    cache = (b"torch's cache", SimpleNamespace(artifacts={"inductor": ["an entry"]}))
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: cache)
    fast = FastPath(compiled_file=tmp_path / "compiled.bin", compile_fn=CountingCompile())  # no aot_compile
    net = Net().eval()
    with torch.inference_mode():
        fast.compiler.compiled_forward(net.forward)(torch.randn(1, 8, 8, 8), torch.randn(1, 16))
    outcome = fast.save_compiled()
    assert outcome.done and "this torch has no aot_compile" in outcome.message
    assert read(tmp_path / "compiled.bin")[2] == {}, "no regions in the file"


def test_a_server_loads_the_file_beside_its_models_so_its_first_call_finds_it_ready(
    saved, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))  # the load points inductor there
    compiler = BackgroundCompiler(artifacts=CompiledArtifacts(file=saved, cache_dir=tmp_path / "cache"))
    compiler.prefetch("cpu")  # what the model manager does as a model starts loading onto a GPU
    compiler.prefetch("cpu")  # a second model: the same load, not another
    compiler._prefetch.join(120)
    assert compiler.artifacts.loaded.done and "3 regions compiled ahead" in compiler.artifacts.loaded.message
    assert len(compiler.regions.ahead) == 3, "the regions are ready before any call or compile job"
    assert not compiler.busy()
