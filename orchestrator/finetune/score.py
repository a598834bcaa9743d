"""Tool-call accuracy: the share of held-out traces whose first tool calls a model gets exactly right.

Right means the same tools, in order, with the same arguments (image names letter for letter), parsed from what
the model generates by the parsers the ``hf:`` brain uses; anything else (another tool, a missing argument, an
invented image name, prose) is wrong.
"""

from __future__ import annotations

from typing import Any

from ..brain.parsers import parse_tool_calls
from .traces import expected_calls


def tool_call_accuracy(
    model: Any, tokenizer: Any, traces: list[dict[str, Any]], max_new_tokens: int = 128
) -> float:
    """The share (0..1) of ``traces`` whose first assistant tool calls ``model`` reproduces, greedily."""
    if not traces:
        return 0.0
    right = sum(predicted_calls(model, tokenizer, t, max_new_tokens) == expected_calls(t)[1] for t in traces)
    return right / len(traces)


def predicted_calls(
    model: Any, tokenizer: Any, trace: dict[str, Any], max_new_tokens: int = 128
) -> list[dict[str, Any]]:
    """The tool calls ``model`` writes for the messages before the trace's first call."""
    import torch

    prompt, _ = expected_calls(trace)
    encoded = tokenizer.apply_chat_template(prompt, tools=trace["tools"] or None, add_generation_prompt=True,
                                            return_dict=True, return_tensors="pt")  # fmt: skip
    encoded = {k: v.to(model.device) for k, v in encoded.items()}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    text = tokenizer.decode(out[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    names = [t["function"]["name"] for t in trace["tools"]]
    message = parse_tool_calls(text, names)
    return [{"name": c["name"], "arguments": c["args"]} for c in message.tool_calls]
