"""Traces: one successful turn as chat JSONL in TRL's conversational format with tools.

Each line is ``{"messages": [...], "tools": [...]}``: OpenAI chat messages (system, user, assistant with
``tool_calls`` whose ``arguments`` are objects, ``tool`` observations, the final reply) and the function specs the
brain was offered, which SFTTrainer passes to the chat template as ``tools=``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import OrchestratorError
from ..session import RECORD


class TraceError(OrchestratorError):
    """A traces file that cannot be trained on; the message says what and where."""


def session_traces(sessions: Path) -> Iterator[dict[str, Any]]:
    """The successful turns of every session saved under ``sessions``: no error, every tool call succeeded, not
    cleared, and at least one tool call (a turn without one teaches nothing about tools)."""
    for path in sorted(sessions.glob(f"*/{RECORD}")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a session being written or damaged: the others still count
        for turn in record.get("turns", []):
            if turn.get("cleared") or turn.get("error"):
                continue
            if not turn.get("tool_calls") or any(c.get("error") for c in turn["tool_calls"]):
                continue
            yield {"messages": turn["messages"], "tools": turn["tools"]}


def dedupe(traces: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Traces in order, each once: two with the same user words, tool calls and arguments, offered the same tools,
    are the same example (call ids, the new image names and the system prompt's image list differ every time)."""
    seen, out = set(), []
    for trace in traces:
        asked = [m.get("content") for m in trace["messages"] if m.get("role") == "user"]
        calls = [(c["function"]["name"], c["function"]["arguments"]) for m in trace["messages"]
                 for c in m.get("tool_calls") or []]  # fmt: skip
        offered = sorted(t.get("function", {}).get("name", "") for t in trace["tools"])
        text = json.dumps([asked, calls, offered], sort_keys=True, ensure_ascii=False)
        key = hashlib.sha256(text.encode()).hexdigest()
        if key not in seen:
            seen.add(key)
            out.append(trace)
    return out


def write_jsonl(traces: list[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(t, ensure_ascii=False) for t in traces)
    out.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def read_traces(path: Path) -> list[dict[str, Any]]:
    """The traces of a JSONL file, each checked (``check_trace``); bad data is a TraceError of one sentence."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TraceError(
            f"Cannot read {path} ({exc.strerror}); make one with `python -m orchestrator traces export`."
        ) from exc
    traces = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            trace = json.loads(line)
        except ValueError as exc:
            raise TraceError(
                f"{path} line {number} is not JSON ({exc.msg}); each line must be one trace."
            ) from exc
        problem = check_trace(trace)
        if problem:
            raise TraceError(f"{path} line {number}: {problem}.")
        traces.append(trace)
    if not traces:
        raise TraceError(
            f"{path} holds no traces; make some with `python -m orchestrator traces export --synthesize 200`."
        )
    return traces


def check_trace(trace: Any) -> str | None:
    """What is wrong with one trace, or None: its fields, roles, and every call naming a tool it offers."""
    if not isinstance(trace, dict) or not isinstance(trace.get("messages"), list) or not trace["messages"]:
        return 'a trace needs a "messages" list (and a "tools" list), as traces export writes'
    if not isinstance(trace.get("tools"), list):
        return 'a trace needs a "tools" list of function specs next to its "messages"'
    offered = {t.get("function", {}).get("name") for t in trace["tools"] if isinstance(t, dict)}
    for message in trace["messages"]:
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "user",
            "assistant",
            "tool",
        ):
            return 'every message needs a "role" of system, user, assistant or tool'
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            if function.get("name") not in offered:
                return f"a tool call names '{function.get('name')}', which is not among the trace's tools ({', '.join(sorted(map(str, offered))) or 'none'})"
            if not isinstance(function.get("arguments"), dict):
                return f"the call of {function.get('name')} needs its arguments as a JSON object"
    if not any(m.get("role") == "assistant" for m in trace["messages"]):
        return "a trace needs at least one assistant message to learn from"
    return None


def expected_calls(trace: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the messages up to the first tool call, that call's [{name, arguments}]) — what scoring asks and checks."""
    for i, message in enumerate(trace["messages"]):
        if message.get("role") == "assistant" and message.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                for c in message["tool_calls"]
            ]
            return trace["messages"][:i], calls
    return trace["messages"], []
