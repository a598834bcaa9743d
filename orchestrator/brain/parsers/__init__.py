"""Tool calls that models write as text, turned into LangChain tool calls.

Native tool calls (the server's ``tool_calls``) come first; this is the fallback for what local models leave
in the text. One recogniser per format, each keyed by its markers, tried in this order (marked formats first,
then shapes that have no marker; see docs/brains.md for examples and sources):

1. ``mistral``: ``[TOOL_CALLS]name[ARGS]{…}``, ``[TOOL_CALLS]name{…}``, ``[TOOL_CALLS][{…}]``
2. ``hermes``: ``<tool_call>…</tool_call>`` (Hermes, Qwen, GLM-4.5/4.7) and the same body in
   ``<toolcall>``, ``<function_call>``, ``<|tool_call|>``, ``[TOOL_CALL]`` wrappers
3. ``function_tag``: ``<function=name>{…}</function>`` (Llama 3.1)
4. ``calling_tool``: ``[Calling tool: name({…})]``
5. ``llama4``: ``<|python_start|>…<|python_end|>``
6. ``structured_chat``: LangChain's ``{"action": …, "action_input": …}`` blobs; ``Final Answer`` unwrapped
7. ``json_text``: the whole answer a JSON call (Llama 3.x ``{"name", "parameters"}``, ``<|python_tag|>``)
8. ``pythonic``: ``[f(a=1), g(city="x")]`` (Llama 3.2/4, ToolACE)
9. ``glm``: ``name`` on the first line, its arguments below (GLM-4, ChatGLM3)

Text that holds no call is the answer itself. A call that is recognisable but broken becomes an *invalid*
tool call whose error the model reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.messages.tool import invalid_tool_call, tool_call

from .common import Bare, Broken, Call, Found, broken_reason, loads_lenient, new_call_id, strip_stray_tokens
from .common import strip_thinking as strip_thinking
from .tagged import calling_tool, function_tag, hermes, llama4, mistral
from .untagged import glm, json_text, pythonic, structured_chat

__all__ = [
    "RECOGNISERS",
    "loads_lenient",
    "make_message",
    "new_call_id",
    "parse_tool_calls",
    "strip_thinking",
]

Recogniser = Callable[[str, Collection[str]], "Found | None"]
RECOGNISERS: tuple[tuple[str, Recogniser], ...] = (
    ("mistral", mistral),
    ("hermes", hermes),
    ("function_tag", function_tag),
    ("calling_tool", calling_tool),
    ("llama4", llama4),
    ("structured_chat", structured_chat),
    ("json_text", json_text),
    ("pythonic", pythonic),
    ("glm", glm),
)


def parse_tool_calls(
    text: str, tool_names: Collection[str], single_args: Mapping[str, str] | None = None
) -> AIMessage:
    """The assistant message a model wrote as text: the tool calls found in it and the rest as content.

    ``single_args`` maps a tool to its one required argument, so a bare value (``"action_input": "cats"``)
    can be passed to it."""
    text = strip_stray_tokens(strip_thinking(text))
    for _name, recognise in RECOGNISERS:
        found = recognise(text, tool_names)
        if found is not None:
            content, calls = found
            return make_message(content, calls, single_args)
    return AIMessage(content=text.strip())


def recognised_by(text: str, tool_names: Collection[str]) -> str | None:
    """The name of the recogniser that claims the text (for docs and the parse-rate table), or None."""
    text = strip_stray_tokens(strip_thinking(text))
    return next((name for name, recognise in RECOGNISERS if recognise(text, tool_names) is not None), None)


def make_message(
    content: str, raw_calls: list[Call] | list[tuple[Any, ...]], single_args: Mapping[str, str] | None = None
) -> AIMessage:
    """An AIMessage from calls (``Call`` or (name, arguments[, id]) tuples); arguments that are not a JSON
    object become invalid calls."""
    valid, invalid = [], []
    for raw_call in raw_calls:
        call = raw_call if isinstance(raw_call, Call) else Call(*raw_call)
        call_id = call.id or new_call_id()
        name = str(call.name or "")
        arguments, error = _arguments(name, call.arguments, single_args or {})
        if error is None and isinstance(arguments, dict):
            valid.append(tool_call(name=name, args=arguments, id=call_id))
        else:
            raw = _raw(call.arguments)
            invalid.append(
                invalid_tool_call(name=name, args=raw, id=call_id, error=error or "not a JSON object")
            )
    return AIMessage(content=content.strip(), tool_calls=valid, invalid_tool_calls=invalid)


def _arguments(name: str, arguments: Any, single_args: Mapping[str, str]) -> tuple[Any, str | None]:
    """(arguments as a dict, None) or (None, why not)."""
    if isinstance(arguments, Broken):
        return None, arguments.reason
    if isinstance(arguments, Bare):
        if name in single_args:
            return {single_args[name]: arguments.value}, None
        return None, "a single value was given where named arguments are needed"
    if isinstance(arguments, str):
        if not arguments.strip():
            return {}, None
        try:
            arguments = loads_lenient(arguments)
        except ValueError:
            return None, broken_reason(arguments)
    return (arguments, None) if isinstance(arguments, dict) else (None, "not a JSON object")


def _raw(arguments: Any) -> str:
    if isinstance(arguments, Broken):
        return arguments.raw
    if isinstance(arguments, Bare):
        arguments = arguments.value
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
