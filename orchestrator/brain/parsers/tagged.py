"""Recognisers for calls that a marker announces: ``[TOOL_CALLS]``, ``<tool_call>`` (and its cousins),
``<function=…>``, ``[Calling tool: …]`` and Llama 4's ``<|python_start|>``.

Each takes ``(text, tool_names)`` and returns ``(content, calls)`` when its marker is there, else None.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from .common import Broken, Call, Found, balanced_end, broken_reason, scalar
from .untagged import json_calls, pythonic_calls

_NAME = r"[A-Za-z_][\w.\-]*"
_MISTRAL_HEAD = re.compile(rf"^\s*(?P<name>{_NAME})\s*(?:\[CALL_ID\]\s*(?P<id>\w+))?\s*(?:\[ARGS\])?\s*")
_HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
# Other wrappers small models and templates use for the same JSON body (nemotron, phi-4-mini, MiniMax, ...).
_HERMES_ALIASES = re.compile(
    r"<(/?)(?:toolcall|tool_calls|function_call|functioncall)>|<\|(/?)tool_call\|>|\[(/?)TOOL_CALL\]"
)
_GLM45_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
_NAME_FIELD = re.compile(r'"name"\s*:\s*"([^"]+)"')
_FUNCTION_TAG = re.compile(rf"<function=({_NAME})>(.*?)(?:</function>|\Z)", re.S)
_CALLING_TOOL = re.compile(rf"\[Calling tool:\s*({_NAME})\s*\(")
_PYTHON_START = re.compile(r"<\|python_start\|>(.*?)(?:<\|python_end\|>|\Z)", re.S)


def mistral(text: str, tool_names: Collection[str]) -> Found | None:
    """Mistral / Devstral: ``[TOOL_CALLS]name[ARGS]{…}`` (also ``name{…}``) or the older ``[TOOL_CALLS][{…}]``."""
    if "[TOOL_CALLS]" not in text:
        return None
    before, *chunks = text.split("[TOOL_CALLS]")
    content, calls = before, []
    for chunk in chunks:
        found, tail = _mistral_chunk(chunk, tool_names)
        calls += found
        content += tail
    return content, calls


def _mistral_chunk(chunk: str, tool_names: Collection[str]) -> tuple[list[Call], str]:
    body = chunk.lstrip()
    if body.startswith(("[", "{")):  # the older list of {"name", "arguments"} objects
        end = balanced_end(body, 0)
        if end is None:
            return [_broken(body)], ""
        calls = json_calls(body[: end + 1], tool_names, any_name=True)
        return (calls if calls else [_broken(body[: end + 1])]), body[end + 1 :]
    head = _MISTRAL_HEAD.match(body)
    if not head:
        return [], chunk
    name, call_id, rest = head.group("name"), head.group("id"), body[head.end() :]
    if not rest.startswith("{"):  # a call without arguments
        return [Call(name, {}, call_id)], rest
    end = balanced_end(rest, 0)
    if end is None:
        return [Call(name, Broken(rest, broken_reason(rest)), call_id)], ""
    return [Call(name, rest[: end + 1], call_id)], rest[end + 1 :]


def hermes(text: str, tool_names: Collection[str]) -> Found | None:
    """Hermes / Qwen ``<tool_call>{"name": …, "arguments": …}</tool_call>`` (a missing end tag is fine), the same
    body in other wrappers, GLM-4.5's ``<arg_key>``/``<arg_value>`` pairs and a bare ``<tool_call>name</tool_call>``."""
    text = _HERMES_ALIASES.sub(lambda m: "</tool_call>" if "/" in m.group(0) else "<tool_call>", text)
    bodies = [m.group(1).strip() for m in _HERMES.finditer(text)]
    if not bodies:
        return None
    return _HERMES.sub("", text), [_hermes_body(body, tool_names) for body in bodies if body]


def _hermes_body(body: str, tool_names: Collection[str]) -> Call:
    objects = json_calls(body, tool_names, any_name=True)
    if len(objects) == 1:
        return objects[0]
    name, _, rest = body.partition("\n")
    name = name.strip()
    if _GLM45_ARG.search(body):  # GLM-4.5: name, then <arg_key>k</arg_key><arg_value>v</arg_value> pairs
        head = body.split("<arg_key>", 1)[0].strip()
        return Call(head, {k.strip(): scalar(v) for k, v in _GLM45_ARG.findall(body)})
    if re.fullmatch(_NAME, body):  # GLM-4.7: <tool_call>get_all_func</tool_call>, a call without arguments
        return Call(body, {})
    if name in tool_names and rest.strip():
        return Call(name, rest)
    return _broken(body)


def function_tag(text: str, tool_names: Collection[str]) -> Found | None:
    """Llama 3.1's custom format ``<function=name>{…}</function>``."""
    calls = [Call(m.group(1), m.group(2).strip() or {}) for m in _FUNCTION_TAG.finditer(text)]
    return (_FUNCTION_TAG.sub("", text), calls) if calls else None


def calling_tool(text: str, tool_names: Collection[str]) -> Found | None:
    """``[Calling tool: name({…})]``, which Qwen models copy from transcripts that show calls that way."""
    calls, content, cursor = [], "", 0
    for match in _CALLING_TOOL.finditer(text):
        if match.start() < cursor:
            continue
        content += text[cursor : match.start()]
        open_at = match.end() - 1
        end = balanced_end(text, open_at)
        if end is None:
            inner = text[open_at + 1 :]
            calls.append(Call(match.group(1), Broken(inner, broken_reason(inner))))
            cursor = len(text)
            break
        inner = text[open_at + 1 : end].strip()
        calls.append(Call(match.group(1), inner or {}))
        cursor = end + 1
        cursor += 1 if text[cursor : cursor + 1] == "]" else 0
    return (content + text[cursor:], calls) if calls else None


def llama4(text: str, tool_names: Collection[str]) -> Found | None:
    """Llama 4: ``<|python_start|>`` then a JSON call or a pythonic list, then ``<|python_end|>``."""
    bodies = [m.group(1).strip() for m in _PYTHON_START.finditer(text)]
    if not bodies:
        return None
    calls: list[Call] = []
    for body in bodies:
        found = pythonic_calls(body, tool_names) if body.startswith("[") else None
        found = found or json_calls(body, tool_names, any_name=True)
        calls += found or [_broken(body)]
    return _PYTHON_START.sub("", text), calls


def _broken(body: str) -> Call:
    """A call whose body cannot be read: keep the name if one can be seen, hand the text back as invalid."""
    named = _NAME_FIELD.search(body)
    name = named.group(1) if named else "unknown"
    return Call(name, Broken(body, broken_reason(body)))
