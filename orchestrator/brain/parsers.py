"""Tool calls that models write as text, turned into LangChain tool calls.

Formats: Hermes/Qwen ``<tool_call>{"name": .., "arguments": ..}</tool_call>`` (also GLM-4.5's
``<arg_key>``/``<arg_value>`` body), Llama-3.1 JSON ``{"name": .., "parameters": ..}``, and GLM-4 /
ChatGLM3 ``name\\n{...}`` / ``name\\n tool_call(k=v)``. Arguments that are not valid JSON become an
*invalid* tool call whose error the model reads; text that holds no tool call is the answer itself.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from collections.abc import Collection
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.messages.tool import invalid_tool_call, tool_call

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.S)
_HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?(.*?)\n?\s*```\s*$", re.S)
_GLM45_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
_NAME_FIELD = re.compile(r'"name"\s*:\s*"([^"]+)"')


def new_call_id() -> str:
    return "call_" + secrets.token_hex(6)


def strip_thinking(text: str) -> str:
    """Drop ``<think>…</think>`` blocks (Qwen3, DeepSeek-R1 style) and anything before a lone ``</think>``."""
    text = _THINK.sub("", text)
    return text.split("</think>", 1)[1] if "</think>" in text else text


def loads_lenient(text: str) -> Any:
    """JSON, or what small models write instead: code fences, single quotes, Python literals, trailing commas."""
    text = _unfence(text).strip()
    try:
        return json.loads(text)
    except ValueError as exc:
        first_error = exc
    for candidate in (_first_object(text), re.sub(r",\s*([}\]])", r"\1", text)):
        if not candidate:
            continue
        try:
            return json.loads(candidate)
        except ValueError:
            pass
        try:
            return ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    raise ValueError(str(first_error).split(":")[0] if str(first_error) else "not JSON")


def parse_tool_calls(text: str, tool_names: Collection[str]) -> AIMessage:
    """The assistant message a model wrote as text: the tool calls found in it and the rest as content."""
    text = strip_thinking(text)
    for parser in (_hermes, _llama_json, _glm):
        found = parser(text, tool_names)
        if found is not None:
            content, raw_calls = found
            return make_message(content, raw_calls)
    return AIMessage(content=text.strip())


def make_message(content: str, raw_calls: list[tuple[Any, ...]]) -> AIMessage:
    """An AIMessage from (name, arguments[, id]) tuples; arguments that are not a JSON object become invalid calls."""
    valid, invalid = [], []
    for name, arguments, *rest in raw_calls:
        call_id = (rest[0] if rest else None) or new_call_id()
        name = str(name or "")
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        if isinstance(arguments, str):
            try:
                arguments = loads_lenient(arguments) if arguments.strip() else {}
            except ValueError as exc:
                invalid.append(invalid_tool_call(name=name, args=raw, id=call_id, error=str(exc)))
                continue
        if isinstance(arguments, dict):
            valid.append(tool_call(name=name, args=arguments, id=call_id))
        else:
            invalid.append(invalid_tool_call(name=name, args=raw, id=call_id, error="not a JSON object"))
    return AIMessage(content=content.strip(), tool_calls=valid, invalid_tool_calls=invalid)


def _hermes(text: str, tool_names: Collection[str]) -> tuple[str, list[tuple[str, Any]]] | None:
    bodies = [m.group(1).strip() for m in _HERMES.finditer(text)]
    if not bodies:
        return None
    calls = [_hermes_body(body, tool_names) for body in bodies if body]
    return _HERMES.sub("", text), calls


def _hermes_body(body: str, tool_names: Collection[str]) -> tuple[str, Any]:
    try:
        obj = loads_lenient(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "name" in obj:
        return str(obj["name"]), obj.get("arguments", obj.get("parameters", {}))
    name, _, rest = body.partition("\n")
    if _GLM45_ARG.search(rest):  # GLM-4.5: name, then <arg_key>k</arg_key><arg_value>v</arg_value> pairs
        return name.strip(), {k.strip(): _scalar(v) for k, v in _GLM45_ARG.findall(rest)}
    if name.strip() in tool_names and rest.strip():
        return name.strip(), rest
    named = _NAME_FIELD.search(body)  # broken JSON: keep the name, hand the raw arguments back as invalid
    raw = body.split('"arguments"', 1)[-1].lstrip(' :"') if named else body
    return (named.group(1) if named else "unknown"), raw


def _llama_json(text: str, tool_names: Collection[str]) -> tuple[str, list[tuple[str, Any]]] | None:
    body = _unfence(text.replace("<|python_tag|>", "")).strip()
    if not body.startswith(("{", "[")):
        return None
    parts = re.split(r"}\s*;\s*{", body)
    objects: list[Any] = []
    try:
        if len(parts) > 1:
            parts = [parts[0] + "}", *("{" + p + "}" for p in parts[1:-1]), "{" + parts[-1]]
            objects = [loads_lenient(p) for p in parts]
        else:
            loaded = loads_lenient(body)
            objects = loaded if isinstance(loaded, list) else [loaded]
    except ValueError:
        return None
    if not objects or not all(_is_call(o) for o in objects):
        return None
    return "", [(str(o["name"]), o.get("parameters", o.get("arguments", {}))) for o in objects]


def _glm(text: str, tool_names: Collection[str]) -> tuple[str, list[tuple[str, Any]]] | None:
    name, _, rest = text.strip().partition("\n")
    if name.strip() not in tool_names or not rest.strip():
        return None
    rest = _unfence(rest.strip())
    call = re.search(r"tool_call\((.*)\)", rest, re.S)
    if call:  # ChatGLM3: tool_call(prompt='a cat', seed=3)
        return "", [(name.strip(), _python_kwargs(call.group(1)))]
    return "", [(name.strip(), rest)]


def _is_call(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("name"), str)
        and ("parameters" in obj or "arguments" in obj)
    )


def _python_kwargs(source: str) -> dict[str, Any] | str:
    try:
        call = ast.parse(f"f({source})", mode="eval").body
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}  # type: ignore[attr-defined]
    except (ValueError, SyntaxError, TypeError):
        return source


def _scalar(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value.strip()


def _unfence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1) if match else text


def _first_object(text: str) -> str | None:
    """The first balanced {...} in the text (quotes respected), or None."""
    start = text.find("{")
    if start < 0:
        return None
    depth, quote, escaped = 0, "", False
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start : index + 1]
    return None
