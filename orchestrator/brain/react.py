"""The ReAct text format, for models without native tool calling.

The tools are described in the system prompt (prompts/react.md); the model writes ``Action:`` /
``Action Input:`` lines or a ``Final Answer:``. Parsing is tolerant: Python-style or fenced JSON, a
bare string for a one-argument tool, a missing ``Final Answer:`` label. Output it cannot parse is the
reply itself, never an error (TaskMatrix's most reported failure was "Could not parse LLM output").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from .parsers import loads_lenient, make_message, strip_thinking
from .parsers.untagged import structured_chat
from .prompts import load_prompt, render

if TYPE_CHECKING:
    from ..tools import Tool

STOP = ["\nObservation:"]
_LABEL = r"(?:Thought|Action|Action\s*Input|Final\s*Answer|Observation)\s*:"
_ACTION = re.compile(
    rf"Action\s*:\s*(?P<name>[^\n]*)\n?(?:\s*Action\s*Input\s*:\s*(?P<input>.*?))?(?=\n\s*{_LABEL}|\Z)",
    re.S | re.I,
)
_FINAL = re.compile(r"Final\s*Answer\s*:\s*(.*)", re.S | re.I)
_NO_TOOL = {"", "none", "n/a", "final answer", "no action"}


def describe_tools(tools: Sequence[Tool]) -> str:
    lines = []
    for tool in tools:
        args = {
            p.name: f"{'required' if p.required else 'optional'}; {p.schema().get('description', '')}"
            for p in tool.params
        }
        lines.append(f"- {tool.name}: {tool.description} Arguments: {json.dumps(args, ensure_ascii=False)}")
    return "\n".join(lines)


def react_messages(messages: list[BaseMessage], tools: Sequence[Tool]) -> list[BaseMessage]:
    """The conversation as plain text turns: tool calls as Action lines, results as Observation lines."""
    instructions = render(
        load_prompt("react.md"), tools=describe_tools(tools), tool_names=", ".join(t.name for t in tools)
    ).strip()
    out: list[BaseMessage] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            out.append(SystemMessage(f"{message.content}\n\n{instructions}"))
        elif isinstance(message, ToolMessage):
            _append(out, HumanMessage(f"Observation: {message.content}"))
        elif isinstance(message, AIMessage):
            _append(out, AIMessage(_as_react_text(message)))
        else:
            _append(out, HumanMessage(str(message.content)))
    return out


def single_args(tools: Sequence[Tool]) -> dict[str, str]:
    """Each tool that takes exactly one required argument, and that argument's name (for bare values)."""
    out = {}
    for tool in tools:
        required = [p.name for p in tool.params if p.required]
        if len(required) == 1:
            out[tool.name] = required[0]
    return out


def parse_react(text: str, tools: Sequence[Tool]) -> AIMessage:
    """Tool calls from ``Action:`` lines (or a LangChain structured-chat ``{"action": …}`` blob), the answer from
    ``Final Answer:``, or the whole text as the answer."""
    text = strip_thinking(text)
    blob = structured_chat(text, [t.name for t in tools])
    if blob is not None:
        return make_message(*blob, single_args(tools))
    text = text.split("\nObservation:", 1)[0]
    final = _FINAL.search(text)
    actions = [m for m in _ACTION.finditer(text) if m.group("name").strip(" `'\"[]*").lower() not in _NO_TOOL]
    if actions and (final is None or actions[0].start() < final.start()):
        by_name = {t.name: t for t in tools}
        return make_message("", [_action(m, by_name) for m in actions])
    if final:
        return AIMessage(content=final.group(1).strip())
    if not actions:  # "Action: None" then "Action Input: the answer" is a common way to answer
        none_input = next((m.group("input") for m in _ACTION.finditer(text) if m.group("input")), None)
        if none_input:
            return AIMessage(content=none_input.strip())
    return AIMessage(content=re.sub(r"^\s*Thought\s*:\s*", "", text, flags=re.I | re.M).strip())


def _action(match: re.Match[str], tools: dict[str, Tool]) -> tuple[str, Any]:
    name = match.group("name").strip(" `'\"[]*").split("(", 1)[0].strip()
    raw = (match.group("input") or "").strip()
    if not raw:
        return name, {}
    try:
        args = loads_lenient(raw)
    except ValueError:
        args = None
    if isinstance(args, dict):
        return name, args
    required = [p for p in tools[name].params if p.required] if name in tools else []
    if len(required) == 1:  # a bare value for a one-argument tool
        value = args if args is not None else raw.strip().strip("\"'`")
        return name, {required[0].name: value}
    return name, raw


def _as_react_text(message: AIMessage) -> str:
    if not message.tool_calls:
        return f"Thought: I can answer now\nFinal Answer: {message.content}"
    blocks = [
        f"Action: {call['name']}\nAction Input: {json.dumps(call['args'], ensure_ascii=False)}"
        for call in message.tool_calls
    ]
    return "Thought: I need a tool\n" + "\n".join(blocks)


def _append(out: list[BaseMessage], message: BaseMessage) -> None:
    """Append, merging with a previous message of the same role (many chat templates need alternation)."""
    if out and type(out[-1]) is type(message) and not isinstance(message, SystemMessage):
        out[-1] = type(message)(f"{out[-1].content}\n{message.content}")
    else:
        out.append(message)
