"""Synthesized traces: varied requests for every tool, in English and Chinese, from ``prompts/finetune_requests.yaml``.

A new install has data before it has users. Image names look like the session's own (``image/1a2b3c4d.png``), listed
in the system prompt as the brain sees them, so a model learns to copy names exactly, never to invent them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ..brain.openai_chat import tool_specs
from ..brain.prompts import load_yaml, render, system_prompt
from ..tools import Tool

TEXT_TOOLS = ("image_captioning", "visual_question_answering", "knowledge_search", "web_search", "read_url")


def synthesize(n: int, tools: Sequence[Tool], languages: Sequence[str] = ("en", "zh"), seed: int = 0,
               system: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """``n`` traces, taking the tools in turn (so each gets about n / len(tools)) and the languages in turn.

    Every trace offers all ``tools``; ``system=False`` leaves the system prompt out (short sequences for tests).
    A tool the templates do not know is skipped; none known is a ValueError."""
    data = load_yaml("finetune_requests.yaml")
    known = [t for t in tools if _requests(data, t.name)]
    if not known:
        raise ValueError(f"no request templates for any of: {', '.join(t.name for t in tools)}")
    rng, specs = random.Random(seed), tool_specs(list(tools))
    return [
        _trace(
            data,
            known[i % len(known)].name,
            languages[(i // len(known)) % len(languages)],
            rng,
            specs,
            system,
        )
        for i in range(n)
    ]


def _requests(data: dict[str, Any], tool: str) -> dict[str, Any] | None:
    """The request templates and arguments of ``tool`` ({"en", "zh", "args"}), or None."""
    if tool in data["tools"]:
        return data["tools"][tool]
    if tool in data["maps"]:
        return {**data["map_requests"], "args": {"image": "{image}"}}
    if tool in data["conditioned"]:
        return {**data["conditioned_requests"], "args": {"image": "{image}", "prompt": "{subject}"}}
    return None


def _trace(data: dict[str, Any], tool: str, language: str, rng: random.Random, specs: list[dict[str, Any]],
           system: bool) -> dict[str, Any]:  # fmt: skip
    requests = _requests(data, tool)
    assert requests is not None
    images = [_image_name(rng) for _ in range(rng.randint(1, 3))]
    new = _image_name(rng)
    slots = {name: rng.choice(pairs) for name, pairs in data["slots"].items()}
    kind = data["maps"].get(tool, ["", ""])
    fill = {"image": images[-1], "mask": images[0] if len(images) > 1 else _image_name(rng)}
    said = {**fill, "kind": kind[language == "zh"], **{k: v[language == "zh"] for k, v in slots.items()}}
    meant = {**fill, **{k: v[0] for k, v in slots.items()}}  # arguments stay in English
    user = render(rng.choice(requests[language]), **said)
    args = {k: render(v, **meant) if isinstance(v, str) else v for k, v in requests["args"].items()}
    answer = rng.choice(data["answers"])
    made = tool not in TEXT_TOOLS
    observation = render(data["observations"]["image" if made else "text"], tool=tool, new=new, answer=answer)
    reply = render(rng.choice(data["replies"]["image" if made else "text"][language]), new=new, answer=answer)
    known = [*images, fill["mask"]] if tool == "inpainting" else images
    messages = (
        [{"role": "system", "content": system_prompt(language, tuple(dict.fromkeys(known)))}]
        if system
        else []
    )
    call = {
        "type": "function",
        "id": f"call_{rng.getrandbits(32):08x}",
        "function": {"name": tool, "arguments": args},
    }
    messages += [
        {"role": "user", "content": user},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": observation, "name": tool, "tool_call_id": call["id"]},
        {"role": "assistant", "content": reply},
    ]
    return {"messages": messages, "tools": specs}


def _image_name(rng: random.Random) -> str:
    return f"image/{rng.getrandbits(32):08x}.png"
