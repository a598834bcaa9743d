"""The ``hf:`` brain with tiny chat models built offline: load, chat template with tools, ReAct, errors."""

from __future__ import annotations

import pytest
import torch
from tiny_chat_model import build_tiny_chat_model

from orchestrator import Orchestrator
from orchestrator.events import Notice, ReplyDelta, ToolStarted

NATIVE_CALL = '<tool_call>\n{"name": "text2image", "arguments": {"prompt": "a cat", "seed": 1}}\n</tool_call>'
REACT_CALL = 'Thought: I should draw\nAction: text2image\nAction Input: {"prompt": "a dog", "seed": 2}'
ANSWER = "A red car is parked by the sea, under a grey sky."
PLAIN_TEMPLATE = (  # ChatML without tools: the brain must fall back to the ReAct format
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-models")
    native = build_tiny_chat_model(root / "qwen-tools", NATIVE_CALL)
    react = build_tiny_chat_model(root / "chatml-plain", REACT_CALL, template=PLAIN_TEMPLATE)
    answer = build_tiny_chat_model(root / "qwen-answer", [w + " " for w in ANSWER.split()[:-1]] + ["sky."])
    return native, react, answer


@pytest.fixture(scope="module")
def session_root(tmp_path_factory):
    return tmp_path_factory.mktemp("sessions")


def hf_orchestrator(path, session_root, quant=None):
    return Orchestrator("Text2Image_cpu", weights="tiny", session_root=session_root, brain=f"hf:{path}",
                        brain_options={"max_steps": 1, "quant": quant})  # fmt: skip


def test_tool_calls_through_the_models_chat_template(models, session_root):
    orch = hf_orchestrator(models[0], session_root)
    assert not orch.brain.loaded  # loads on the first chat, not at construction
    session = orch.new_session()
    events = list(session.stream("draw a cat"))
    assert isinstance(events[0], Notice) and "Loading the language model" in events[0].text
    brain = orch.brain.get()
    assert brain.native and brain.device == "cpu"
    started = next(e for e in events if isinstance(e, ToolStarted))
    assert (started.tool, started.args) == ("text2image", {"prompt": "a cat", "seed": 1})
    result = events[-1].result
    assert result.tool_calls[0].error is None and (session.folder / result.images[0]).is_file()
    assert result.reply.startswith("I stopped after 1 steps")  # this model only ever calls the tool
    shown = "".join(e.text for e in events if isinstance(e, ReplyDelta))
    assert shown == result.reply and "tool_call" not in shown  # the call being written was never shown

    prompts = []
    generate = brain.model.generate
    brain.model.generate = lambda **kw: prompts.append(kw["input_ids"]) or generate(**kw)
    second = session.stream("画一只猫")
    assert not any(isinstance(e, Notice) for e in second)  # loaded once
    prompt = brain.tokenizer.decode(prompts[0][0])
    assert "<tools>" in prompt and '"name": "text2image"' in prompt and '"required": ["prompt"]' in prompt
    assert (
        "最新图片：" in prompt and "画一只猫" in prompt and "<tool_response>" in prompt
    )  # history, in Chinese


def test_the_reply_streams_token_by_token(models, session_root):
    events = list(hf_orchestrator(models[2], session_root).new_session().stream("what is in the picture?"))
    pieces = [e.text for e in events if isinstance(e, ReplyDelta)]
    assert len(pieces) >= 5 and "".join(pieces) == ANSWER == events[-1].result.reply


def test_a_template_without_tools_gets_the_react_format(models, session_root):
    orch = hf_orchestrator(models[1], session_root)
    result = orch.new_session().chat("draw a dog")
    assert not orch.brain.get().native
    assert result.tool_calls[0].args["prompt"] == "a dog" and result.tool_calls[0].error is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_quantization_without_cuda_is_a_clear_reply(models, session_root):
    result = hf_orchestrator(models[0], session_root, quant="int8").new_session().chat("draw a cat")
    assert (
        result.reply
        == "--quant int8 needs a CUDA GPU (bitsandbytes) but this machine has none; drop --quant."
    )
    assert result.error and result.tool_calls == []


def test_a_missing_model_says_how_to_get_it(session_root, tmp_path):
    missing = tmp_path / "no-such-model"
    session = hf_orchestrator(missing, session_root).new_session()
    result = session.chat("draw a cat")
    assert result.reply.startswith(f"Cannot load the local model '{missing}'")
    assert f"huggingface-cli download {missing}" in result.reply
    assert session.chat("画一只猫").reply.startswith(f"无法加载本地模型 '{missing}'")
