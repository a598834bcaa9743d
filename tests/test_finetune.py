"""Fine-tuning the hf: brain on traces: the session record, traces export, bad data, the dtype rule, a run, --adapter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_chat_model import build_random_chat_model

from orchestrator import Orchestrator
from orchestrator.cards import load_cards
from orchestrator.cli import main
from orchestrator.finetune.synth import synthesize
from orchestrator.finetune.traces import TraceError, read_traces, write_jsonl
from orchestrator.finetune.train import FinetuneConfig, precision_for, prepare, prompt_completions
from orchestrator.toolbox import all_tools

pytest.importorskip("peft")
pytest.importorskip("trl")
TOOLS = [t for t in all_tools(load_cards()) if t.name in ("text2image", "image_captioning")]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    corpus = [json.dumps(t) for t in synthesize(30, TOOLS, ("en",), system=False)]
    return build_random_chat_model(tmp_path_factory.mktemp("chat") / "base", corpus)


def test_every_tool_has_requests_in_both_languages():
    tools = all_tools(load_cards())
    traces = synthesize(2 * len(tools), tools)
    called = {t["messages"][2]["tool_calls"][0]["function"]["name"] for t in traces}
    assert called == {t.name for t in tools}
    assert any("画" in t["messages"][1]["content"] for t in traces)
    for trace in traces:
        args = trace["messages"][2]["tool_calls"][0]["function"]["arguments"]
        for name in (v for v in args.values() if isinstance(v, str) and v.startswith("image/")):
            assert name in trace["messages"][0]["content"]  # listed in the system prompt, never invented


def test_a_turn_is_recorded_and_exported_once(tmp_path, capsys):
    orch = Orchestrator("Text2Image_cpu", weights="tiny", session_root=tmp_path, brain="rules")
    session = orch.new_session()
    for _ in range(2):
        session.chat("/text2image a red fox")
    record = json.loads((session.folder / "history.json").read_text())
    assert len(record["turns"]) == 2 and record["turns"][0]["tool_calls"][0]["error"] is None
    failed = orch.new_session()
    failed.chat("/image_captioning image/00000000.png")  # no such image: a failed call, left out
    cleared = orch.new_session()
    cleared.chat("/text2image a blue whale")
    cleared.clear()
    out = tmp_path / "traces.jsonl"
    assert main(["traces", "export", "--sessions", str(tmp_path), "--out", str(out)]) == 0
    traces = read_traces(out)
    assert len(traces) == 1  # two identical turns, deduplicated; the failed and the cleared turns left out
    call = next(m for m in traces[0]["messages"] if m.get("tool_calls"))["tool_calls"][0]["function"]
    assert call == {"name": "text2image", "arguments": {"prompt": "a red fox"}}
    assert "wrote 1 traces" in capsys.readouterr().out


def test_the_loss_falls_on_what_the_assistant_writes_never_on_a_tool_answer():
    """A tool's answer names a new image the model cannot know: trained on, it teaches the model to invent names."""
    trace = synthesize(1, TOOLS, ("en",))[0]
    examples = prompt_completions(trace)
    assert [e["completion"] for e in examples] == [[m] for m in trace["messages"] if m["role"] == "assistant"]
    for example in examples:
        assert example["prompt"] == trace["messages"][: trace["messages"].index(example["completion"][0])]
        assert example["tools"] == trace["tools"]
    assert not any(m["role"] == "tool" for e in examples for m in e["completion"])


@pytest.mark.parametrize(
    ("content", "sentence"),
    [
        ("", "holds no traces"),
        ('{"conversations": []}\n', 'needs a "messages" list'),
        ("not json\n", "is not JSON"),
    ],
)
def test_bad_data_is_one_sentence(tmp_path, content, sentence):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TraceError, match=sentence) as err:
        read_traces(path)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


def test_a_trace_naming_an_unknown_tool_is_refused(tmp_path, base, capsys):
    trace = synthesize(1, TOOLS, ("en",), system=False)[0]
    trace["messages"][1]["tool_calls"][0]["function"]["name"] = "draw_picture"
    write_jsonl([trace], tmp_path / "bad.jsonl")
    argv = [
        "finetune",
        "--base",
        f"hf:{base}",
        "--data",
        str(tmp_path / "bad.jsonl"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "names 'draw_picture', which is not among the trace's tools" in err and err.count("\n") == 1


def test_freeze_never_asks_gradients_of_integer_weights(base):
    """Naively every weight of the trained layers gets requires_grad: int8 weights raise "Only Tensors of
    floating point and complex dtype can require gradients"."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    last = model.model.layers[-1]
    last.register_parameter(
        "scale_ids", torch.nn.Parameter(torch.zeros(4, dtype=torch.int8), requires_grad=False)
    )
    with pytest.raises(RuntimeError, match="(?i)only Tensors of floating point"):
        for param in last.parameters():  # the naive freeze
            param.requires_grad_(True)
    model = prepare(model, "freeze", FinetuneConfig(base="", data=Path(), method="freeze", out=Path(), freeze_layers=1),
                    precision_for("cpu"))  # fmt: skip
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert (
        trained
        and all(n.startswith("model.layers.1.") for n in trained)
        and "model.layers.1.scale_ids" not in trained
    )
    ids = torch.tensor([[1, 2, 3, 4]])
    model(input_ids=ids, labels=ids).loss.backward()


def test_freeze_does_not_checkpoint(tmp_path, base, caplog):
    """Checkpointing makes transformers ask gradients of the inputs, so a freeze run would backpropagate through
    every frozen layer (2.3x slower on a 7B, same memory): freeze ignores the flag and says so, once."""
    from orchestrator.finetune.train import checkpointing

    asked = {m: FinetuneConfig(base="", data=Path(), method=m, out=Path(), gradient_checkpointing=True)
             for m in ("lora", "freeze")}  # fmt: skip
    assert checkpointing(asked["lora"]) is True and checkpointing(asked["freeze"]) is False
    write_jsonl(synthesize(4, TOOLS, ("en",), system=False), tmp_path / "t.jsonl")
    argv = ["finetune", "--base", f"hf:{base}", "--data", str(tmp_path / "t.jsonl"), "--method", "freeze",
            "--freeze-layers", "1", "--gradient-checkpointing", "--max-steps", "1", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 0
    assert caplog.text.count("--gradient-checkpointing is ignored for freeze") == 1


@pytest.mark.parametrize("method", ["lora", "prefix", "freeze"])
def test_one_dtype_over_a_bfloat16_base(base, method):
    """A bfloat16 base with float32 adapters is the mix that fails as "self and mat2 must have the same dtype"
    outside autocast; what is trained takes the base's dtype, and training and generating both work."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    rule = {"dtype": torch.bfloat16, "trainable": torch.bfloat16, "bf16": True, "fp16": False}
    config = FinetuneConfig(base="", data=Path(), method=method, out=Path(), freeze_layers=1, prefix_tokens=4)
    model = prepare(model, method, config, rule)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.bfloat16}
    ids = torch.tensor([[1, 2, 3, 4]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.generate(input_ids=ids, max_new_tokens=3, do_sample=False).shape[1] >= 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_qlora_without_cuda_is_one_sentence(tmp_path, base, capsys):
    write_jsonl(synthesize(4, TOOLS, ("en",), system=False), tmp_path / "t.jsonl")
    argv = ["finetune", "--base", f"hf:{base}", "--data", str(tmp_path / "t.jsonl"), "--method", "qlora",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 1
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_finetune_saves_an_adapter_that_a_new_process_serves(tmp_path, base, capsys):
    write_jsonl(synthesize(8, TOOLS, ("en",), seed=0, system=False), tmp_path / "train.jsonl")
    write_jsonl(synthesize(2, TOOLS, ("en",), seed=1, system=False), tmp_path / "held.jsonl")
    out = tmp_path / "adapter"
    argv = ["finetune", "--base", f"hf:{base}", "--data", str(tmp_path / "train.jsonl"), "--eval",
            str(tmp_path / "held.jsonl"), "--method", "lora", "--out", str(out), "--max-steps", "2",
            "--batch-size", "4", "--lr", "1e-3"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tool-call accuracy before" in printed and f"--adapter {out}" in printed
    assert (out / "adapter_config.json").is_file() and (out / "finetune.json").is_file()
    assert main([*argv, "--resume", "--max-steps", "3"]) == 0  # goes on from checkpoint-2
    script = (
        "import sys; from orchestrator import Orchestrator\n"
        f"o = Orchestrator('Text2Image_cpu', weights='tiny', session_root={str(tmp_path)!r}, brain='hf:{base}', "
        f"brain_options={{'adapter': {str(out)!r}, 'max_steps': 1, 'max_new_tokens': 8}})\n"
        "r = o.new_session().chat('draw a red fox')\n"
        "print(type(o.brain.get().model).__name__, r.error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["PeftModelForCausalLM", "None"]


def test_the_gpu_benchmark_runs_tiny_on_cpu(tmp_path, monkeypatch, capsys):
    from benchmarks.finetune_gpu import main as bench

    monkeypatch.setenv("OUT", str(tmp_path))
    assert bench(["--tiny", "--methods", "lora,freeze"]) == 0
    rows = json.loads((tmp_path / "finetune_gpu.json").read_text())["rows"]
    assert len(rows) == 4 and all(r["examples_s"] and r["error"] is None for r in rows)
    assert "peft+Trainer defaults" in capsys.readouterr().out
