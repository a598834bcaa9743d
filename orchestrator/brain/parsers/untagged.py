"""Recognisers for calls without a marker of their own: LangChain structured-chat blobs, bare JSON (Llama 3.x),
pythonic call lists (Llama 3.2/4, ToolACE) and GLM-4's ``name`` line followed by its arguments.

Without a marker the shape itself must be unmistakable, so a name that is not one of the session's tools
counts only where the shape says "call" on its own (``"parameters"``, a list of ``f(x=1)``).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Collection
from typing import Any

from .common import (
    Bare,
    Broken,
    Call,
    Found,
    balanced_end,
    broken_reason,
    call_from_object,
    python_kwargs,
    try_loads,
    unfence,
)

_LEAD_OUT = re.compile(r"(?:\s*(?:Action\s*:|```\w*|\[))+\s*$|^\s*(?:Question|Thought)\s*:.*$", re.I | re.M)
_ACTION_KEY = re.compile(r"[\"']action[\"']\s*:\s*[\"']([^\"']*)[\"']")
_FINAL = {"final answer", "final_answer", "finalanswer"}
_NAME_FIELD = re.compile(r'"name"\s*:\s*"([^"]+)"')
_CALL_KEYS = ("arguments", "parameters", "function")


def json_calls(body: str, tool_names: Collection[str], any_name: bool = False) -> list[Call]:
    """The calls in a JSON body: one object, a list, or objects separated by ``;``. Empty when it holds anything
    else. ``any_name``: inside a marker any ``name`` counts; bare JSON needs call keys or a known tool name."""
    values = _json_values(unfence(body.replace("<|python_tag|>", "")).strip())
    calls = []
    for value in values or []:
        for item in value if isinstance(value, list) else [value]:
            call = call_from_object(item)
            known = isinstance(item, dict) and (
                any(k in item for k in _CALL_KEYS) or item.get("name") in tool_names
            )
            if call is None or not (any_name or known):
                return []
            calls.append(call)
    return calls


def _json_values(text: str) -> list[Any] | None:
    """The JSON values written one after another (``{…}; {…}``), or None when the text is not only that."""
    values, index = [], 0
    while index < len(text):
        while index < len(text) and text[index] in " \t\r\n;,":
            index += 1
        if index >= len(text):
            break
        if text[index] not in "{[":
            return None
        end = balanced_end(text, index)
        segment = text[index : end + 1] if end is not None else _one_brace_more(text[index:])
        value = try_loads(segment) if segment else None
        if value is None:
            return None
        values.append(value)
        index = end + 1 if end is not None else len(text)
    return values


def _one_brace_more(segment: str) -> str | None:
    """A call nested under ``"function"`` that lost one closing brace at the very end, closed again."""
    stripped = segment.rstrip()
    return (
        stripped + "}" if stripped.endswith("}") and stripped.count("{") - stripped.count("}") == 1 else None
    )


def json_text(text: str, tool_names: Collection[str]) -> Found | None:
    """Llama 3.1/3.2, Qwen without tags, Hermes 3: the whole answer is a JSON call (``<|python_tag|>``, fences ok)."""
    body = unfence(text.replace("<|python_tag|>", "")).strip()
    if not body.startswith(("{", "[")):
        return None
    calls = json_calls(body, tool_names)
    if calls:
        return "", calls
    named = _NAME_FIELD.search(body)
    if named and named.group(1) in tool_names and _json_values(body) is None:  # a known tool's call, broken
        return "", [Call(named.group(1), Broken(body, broken_reason(body)))]
    return None


def structured_chat(text: str, tool_names: Collection[str]) -> Found | None:
    """LangChain's structured-chat agent: ``Action:`` and a ``{"action": …, "action_input": …}`` blob (or a list);
    ``"action": "Final Answer"`` is the reply, unwrapped. A result the model goes on to invent is dropped."""
    text = re.split(r"\n\s*Observation\s*:", text, maxsplit=1)[0]
    first = _ACTION_KEY.search(text)
    if not first:
        return None
    start = text.rfind("{", 0, first.start())
    if start < 0:
        return None
    before = text[:start].rstrip()
    if before.endswith("["):
        start = len(before) - 1
    end = balanced_end(text, start)
    blob = try_loads(text[start : end + 1]) if end is not None else None
    if blob is None:
        raw = text[start:]
        return _LEAD_OUT.sub("", text[:start]).strip(), [
            Call(first.group(1), Broken(raw, broken_reason(raw)))
        ]
    calls = []
    for item in blob if isinstance(blob, list) else [blob]:
        if not isinstance(item, dict) or "action" not in item:
            return None
        name, value = str(item["action"]).strip(), item.get("action_input", {})
        if name.lower() in _FINAL:
            if calls:
                break
            return (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)), []
        calls.append(Call(name, value if isinstance(value, dict) else Bare(value)))
    return _LEAD_OUT.sub("", text[:start]).strip(), calls  # the words before the blob stay, as with tags


def pythonic(text: str, tool_names: Collection[str]) -> Found | None:
    """``[get_weather(city="Paris"), get_time()]`` as the whole answer, or after some words if it names a known
    tool; a bare ``text2image(prompt="a cat")`` only for a known tool."""
    body = unfence(text).strip()
    calls = pythonic_calls(body, tool_names)
    if calls is not None:
        return "", calls
    for name in tool_names:
        at = body.find(f"[{name}(")
        if at < 0:
            continue
        end = balanced_end(body, at)
        found = pythonic_calls(body[at : end + 1], tool_names) if end is not None else None
        if found is None:
            raw = body[at:]
            return body[:at], [Call(name, Broken(raw, "the call is not valid Python: " + broken_reason(raw)))]
        return body[:at] + body[end + 1 :], found
    return None


def pythonic_calls(body: str, tool_names: Collection[str]) -> list[Call] | None:
    """The calls of a pythonic list, or None when the text is not one."""
    try:
        node = ast.parse(body.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return None
    if isinstance(node, ast.Call):
        if _func_name(node) not in tool_names:
            return None
        items = [node]
    elif isinstance(node, ast.List) and node.elts and all(isinstance(e, ast.Call) for e in node.elts):
        items = node.elts  # type: ignore[assignment]
    else:
        return None
    calls = [_python_call(item) for item in items]
    return None if any(c is None for c in calls) else calls  # type: ignore[return-value]


def _python_call(node: ast.Call) -> Call | None:
    name = _func_name(node)
    try:
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        args = [ast.literal_eval(a) for a in node.args]
    except (ValueError, SyntaxError, TypeError):
        return None
    if not name or len(args) > 1:
        return None
    if args and isinstance(args[0], dict) and not kwargs:  # [read({"file_path": "x"})]
        return Call(name, args[0])
    return Call(name, Bare(args[0])) if args else Call(name, kwargs)


def _func_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):  # functions.get_weather(...)
        return func.attr
    return None


def glm(text: str, tool_names: Collection[str]) -> Found | None:
    """GLM-4 / ChatGLM3: a tool's name on the first line, then its arguments (JSON or ``tool_call(k=v)``)."""
    name, _, rest = text.strip().partition("\n")
    name, rest = name.strip(), unfence(rest.strip())
    if name not in tool_names or not rest:
        return None
    call = re.search(r"tool_call\((.*)\)", rest, re.S)
    if call:  # ChatGLM3: tool_call(prompt='a cat', seed=2)
        return "", [Call(name, python_kwargs(call.group(1)))]
    return "", [Call(name, rest if rest.startswith(("{", "[")) else Bare(rest))]
