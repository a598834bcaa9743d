"""What of a reply being streamed may be shown yet: never a tool call, a thought or a half-written marker.

A model's text arrives in pieces, and a tool call written as text (``<tool_call>…``, ``[TOOL_CALLS]…``, a JSON
call, a tool's name on the first line, ``Action:``…) must not reach the user while it is written. A guard is fed
the pieces and returns the new text that is safe to show: the part before anything that is, or could still
become, a call or a thought. What it holds back is not lost: when the step ends, the parsed message is the
truth, and the agent sends whatever the guard held (see ``agent._ask``).

Two guards: ``CallGuard`` for models that write calls in any format of ``parsers`` (and native calls, which
arrive apart from the text), ``ReactGuard`` for the ReAct text format, where only a ``Final Answer:`` is shown.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Generator
from typing import TypeVar

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Openings of every tagged format the parsers read, and of JSON/ReAct calls written after some words.
MARKERS = (
    "<tool_call",
    "<toolcall",
    "<function",
    "<|",
    "<think>",
    "[TOOL_CALL",
    "[Calling tool",
    "```",
    '{"name"',
    '{"action"',
    "{'name'",
    '{"function"',
    "Action:",
    "Action Input:",
    "Thought:",
)
AGENT_LABELS = ("Action", "Thought", "Question")  # a reply that opens with one is an agent transcript
_STARTS_A_CALL = "{[<`"  # a reply that opens with one may be a call in its whole (JSON, pythonic, a tag)
_FINAL = re.compile(r"Final\s*Answer\s*:\s*", re.I)
_ACTION = re.compile(r"(?:^|\n)\s*Action\s*:", re.I)
T = TypeVar("T")


class CallGuard:
    """For text that may hold tool calls in any format ``parsers.parse_tool_calls`` reads."""

    def __init__(self, tool_names: Collection[str]):
        self.names = tuple(tool_names)
        self.markers = MARKERS + tuple(f"[{name}(" for name in self.names)
        self.text = ""  # everything fed so far
        self.shown = 0  # characters of ``visible`` already returned
        self.closed = False  # a call or thought began: nothing more is shown in this step

    def feed(self, piece: str) -> str:
        """The text that became safe to show with ``piece`` (often ``piece`` itself; "" while in doubt)."""
        self.text += piece
        if self.closed:
            return ""
        body = self._after_thinking(self.text)
        if body is None:
            return ""
        lead = len(body) - len(body.lstrip())
        start = body[lead:]
        if not start or self._may_be_whole_call(start):
            return ""
        visible = body[lead:][: self._cut(start)]
        new = visible[self.shown :]
        self.shown = max(self.shown, len(visible))
        return new

    def _after_thinking(self, text: str) -> str | None:
        """The text after a leading ``<think>…</think>``; None while the thought (or its opening) is unfinished."""
        stripped = text.lstrip()
        if THINK_OPEN.startswith(stripped):  # "", "<", "<th": maybe a thought
            return None if stripped else ""
        if stripped.startswith(THINK_OPEN):
            if THINK_CLOSE not in stripped:
                return None
            return stripped.split(THINK_CLOSE, 1)[1]
        return text

    def _may_be_whole_call(self, start: str) -> bool:
        """A reply that is (or may still be) one call in its whole: JSON, a pythonic list, a tag, a tool's name
        on the first line (GLM), ``Action:`` (structured chat) or a bare ``tool(…)``."""
        if start[0] in _STARTS_A_CALL:
            return True
        first = start.split("\n", 1)[0].rstrip()
        multiline = "\n" in start
        for name in (*self.names, *AGENT_LABELS):
            if start.startswith(name) and (len(start) == len(name) or start[len(name)] in "(\n :{\t\r"):
                return True
            if not multiline and name.startswith(first):  # the first line is still a prefix of a name
                return True
        return False

    def _cut(self, body: str) -> int:
        """Where the shown text must stop: at the first marker, or at a tail that may become one."""
        for index, char in enumerate(body):
            if char not in "<[{`AT":
                continue
            rest = body[index:]
            for marker in self.markers:
                if rest.startswith(marker):
                    self.closed = True
                    return index
                if marker.startswith(rest):  # the text ends in what may become this marker
                    return index
        return len(body)


class ReactGuard:
    """For the ReAct text format: only what follows ``Final Answer:`` is shown, and nothing once an ``Action:``
    came first (that step is a tool call)."""

    def __init__(self, tool_names: Collection[str] = ()):
        self.text = ""
        self.shown = 0

    def feed(self, piece: str) -> str:
        self.text += piece
        final = _FINAL.search(self.text)
        if final is None:
            return ""
        action = _ACTION.search(self.text)
        if action is not None and action.start() < final.start():
            return ""
        answer = self.text[final.end() :].split("\nObservation:", 1)[0]
        held = _held_tail(answer, "\nObservation:")
        visible = answer[: len(answer) - held]
        new = visible[self.shown :]
        self.shown = max(self.shown, len(visible))
        return new


def _held_tail(text: str, marker: str) -> int:
    """How many characters at the end of ``text`` may be the start of ``marker``."""
    for size in range(min(len(marker), len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def drain(pieces: Generator[str, None, T]) -> T:
    """What a streaming generator returns, its pieces left unread (``respond`` of a brain that streams)."""
    while True:
        try:
            next(pieces)
        except StopIteration as stop:
            return stop.value
