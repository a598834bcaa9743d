"""What every recogniser shares: lenient JSON, thinking and end tokens removed, and the raw call records."""

from __future__ import annotations

import ast
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.S)
_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?(.*?)\n?\s*```\s*$", re.S)
# End-of-turn tokens that servers leave in the text when the template does not strip them.
_STRAY = re.compile(r"<\|(?:eot_id|eom_id|im_end|end|endoftext|eot|end_of_text)\|>|</s>|<\|python_end\|>\s*$")
_SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


@dataclass(frozen=True)
class Call:
    """A tool call as found in text: arguments are a dict, raw text still to be read, or a bare value."""

    name: str
    arguments: Any  # dict, str (JSON to read), Bare or Broken
    id: str | None = None


@dataclass(frozen=True)
class Bare:
    """A single value where an object was expected (``"action_input": "cats"``, ``Action Input: cats``)."""

    value: Any


@dataclass(frozen=True)
class Broken:
    """A call that is recognisable but cannot be read; ``reason`` is what the model is told."""

    raw: str
    reason: str


Found = tuple[str, list[Call]]  # (the text that is not a call, the calls)


def new_call_id() -> str:
    return "call_" + secrets.token_hex(6)


def strip_thinking(text: str) -> str:
    """Drop ``<think>…</think>`` blocks (Qwen3, DeepSeek-R1 style) and anything before a lone ``</think>``."""
    text = _THINK.sub("", text)
    return text.split("</think>", 1)[1] if "</think>" in text else text


def strip_stray_tokens(text: str) -> str:
    return _STRAY.sub("", text)


def loads_lenient(text: str) -> Any:
    """JSON, or what small models write instead: code fences, single quotes, Python literals, trailing commas."""
    text = unfence(text).strip().translate(_SMART_QUOTES)
    try:
        return json.loads(text)
    except ValueError as exc:
        first_error = exc
    for candidate in (first_object(text), re.sub(r",\s*([}\]])", r"\1", text)):
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


def try_loads(text: str) -> Any:
    """``loads_lenient`` or None."""
    try:
        return loads_lenient(text)
    except ValueError:
        return None


def unfence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1) if match else text


def scalar(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value.strip()


def python_kwargs(source: str) -> dict[str, Any] | str:
    """``prompt='a cat', seed=3`` as a dict; the source itself when it is not keyword literals."""
    try:
        call = ast.parse(f"f({source})", mode="eval").body
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}  # type: ignore[attr-defined]
    except (ValueError, SyntaxError, TypeError):
        return source


def first_object(text: str) -> str | None:
    """The first balanced {...} in the text (quotes respected), or None."""
    start = text.find("{")
    if start < 0:
        return None
    end = balanced_end(text, start)
    return text[start : end + 1] if end is not None else None


def balanced_end(text: str, start: int) -> int | None:
    """The index of the bracket that closes the one at ``start`` (quotes respected), or None if it never closes."""
    opening = text[start]
    closing = {"{": "}", "[": "]", "(": ")"}[opening]
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
        elif char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return index
    return None


def call_from_object(obj: Any) -> Call | None:
    """A call from the JSON shapes models write: ``name`` + ``arguments``/``parameters``, a call nested under
    ``function``, or the arguments written next to ``name``. None when the object names no function."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # OpenAI's own shape, copied into the text
        inner = call_from_object(obj["function"])
        return Call(inner.name, inner.arguments, obj.get("id")) if inner else None
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    for key in ("arguments", "parameters", "args", "input"):
        if key in obj:
            value = obj[key]
            return Call(name.strip(), {} if value is None else value)
    rest = {k: v for k, v in obj.items() if k not in ("name", "type", "id")}
    return Call(name.strip(), rest)


def broken_reason(text: str) -> str:
    """Why a call's JSON cannot be read, as the model should be told."""
    opened = text.count("{") + text.count("[") - text.count("}") - text.count("]")
    if opened > 0:
        return "the JSON is cut off: a closing brace or bracket is missing"
    try:
        json.loads(text)
    except ValueError as exc:
        return f"the JSON is broken: {str(exc).split(':')[0]}"
    return "the JSON is not an object"
