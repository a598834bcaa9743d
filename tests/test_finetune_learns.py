"""Issue 24's bar: a tiny chat model built offline learns 30 synthesized traces, with LoRA and with prefix tuning
(held-out tool-call accuracy from near 0 to >= 90%), and a new process serves the adapter in a chat.

The base (``build_copy_chat_model``) knows nothing of tools but has a copy path, so the adapters learn in seconds
on a CPU what a real model learns: the call's format, which tool the words ask for, and which image to name. The
traces carry the system prompt and the tools the chat offers, so what is learned is what the chat asks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tiny_chat_model import build_copy_chat_model, build_tokenizer

from orchestrator.cards import load_cards
from orchestrator.cli import main
from orchestrator.finetune.synth import synthesize
from orchestrator.finetune.traces import write_jsonl
from orchestrator.toolbox import all_tools

pytest.importorskip("peft")
pytest.importorskip("trl")
OFFERED = ("image_captioning", "image2canny")  # what the chat below offers, in its order
TOOLS = [t for t in all_tools(load_cards()) if t.name in OFFERED]
CHAT_IMAGE = "image/0badcafe.png"
CHAT = f"Make a Canny edge map of {CHAT_IMAGE}."
FLAGS = {"lora": ["--lr", "1e-3", "--lora-r", "16", "--lora-alpha", "32"],
         "prefix": ["--lr", "3e-2", "--prefix-tokens", "16"]}  # fmt: skip


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """30 training traces, 20 held out (none asks what a training trace asks), and the base built on their text."""
    root = tmp_path_factory.mktemp("learns")
    train = synthesize(30, TOOLS, ("en",), seed=0)
    asked = {t["messages"][1]["content"] for t in train}
    held = [t for t in synthesize(40, TOOLS, ("en",), seed=1) if t["messages"][1]["content"] not in asked]
    held = held[:20]
    assert len(held) == 20 and CHAT not in asked
    write_jsonl(train, root / "train.jsonl")
    write_jsonl(held, root / "held.jsonl")
    render = build_tokenizer(["x"]).apply_chat_template
    texts = [render(t["messages"], tools=t["tools"], tokenize=False) for t in train + held]
    always = set.intersection(*(set(text.split("\n")) for text in texts))  # rules, tools: a token a line
    fixed = sorted(line for line in always if len(line) >= 12 and "<|" not in line) + [t.name for t in TOOLS]
    build_copy_chat_model(root / "base", [*texts, CHAT], fixed)
    return root


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_an_adapter_learns_30_traces(traces, method, capsys):
    out = traces / method
    argv = ["finetune", "--base", f"hf:{traces / 'base'}", "--data", str(traces / "train.jsonl"), "--eval",
            str(traces / "held.jsonl"), "--method", method, "--out", str(out), "--epochs", "30",
            "--batch-size", "4", *FLAGS[method]]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "finetune.json").read_text())
    assert (result["train_examples"], result["held_out"]) == (30, 20)
    assert result["accuracy_before"] <= 0.1, result
    assert result["accuracy_after"] >= 0.9, result
    assert f"{result['accuracy_after']:.0%}" in capsys.readouterr().out


def test_a_new_process_chats_with_each_adapter(traces):
    """The adapters of the test above, loaded by the hf: brain in a fresh process: a held-out-like request calls the
    right tool on the right image (the session's own record says so)."""
    outs = {m: traces / m for m in ("lora", "prefix")}
    if not all((out / "adapter_config.json").is_file() for out in outs.values()):
        pytest.skip("needs the adapters of test_an_adapter_learns_30_traces")
    script = (
        "import json; from PIL import Image; from orchestrator import Orchestrator\n"
        f"for method, out in {[(m, str(o)) for m, o in outs.items()]!r}:\n"
        f"    o = Orchestrator('ImageCaptioning_cpu,Image2Canny_cpu', weights='tiny', session_root=out + '-chat',\n"
        f"                     brain='hf:{traces / 'base'}', brain_options={{'adapter': out, 'max_steps': 1}})\n"
        "    s = o.new_session()\n"
        f"    s.images.add(Image.new('RGB', (64, 64), 'red'), tool='upload', args={{}}, parents=[], seed=None,\n"
        f"                 name={CHAT_IMAGE!r})\n"
        f"    s.chat({CHAT!r})\n"
        "    turn = json.loads((s.folder / 'history.json').read_text())['turns'][0]\n"
        "    print(method, json.dumps([[c['tool'], c['args'], c['error']] for c in turn['tool_calls']]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    calls = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.split(" ")[0] in outs)
    for method in outs:
        expected = [["image2canny", {"image": CHAT_IMAGE}, None]]
        assert json.loads(calls[method]) == expected, (method, done.stdout)
