"""The ``rules`` brain: no LLM. Bilingual keyword routing of one-tool requests, and slash commands.

``/text2image prompt="a red car" seed=3`` calls a tool directly; ``/kb NAME question`` searches a knowledge base (words without ``key=`` fill its first
text argument; a missing image is the newest one). Other requests go through the routing table in
prompts/rules.yaml. After the tool ran, the reply reports its result in the language of the turn.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.tool import tool_call

from .base import TurnInfo
from .parsers import new_call_id
from .prompts import load_yaml, message

if TYPE_CHECKING:
    from ..tools import Tool

_IMAGE = re.compile(r"(?:image/)?([0-9a-f]{8})(?:\.png)?\b")
_IMAGE_REF = re.compile(r"(?:the\s+)?(?:image\s+|picture\s+|photo\s+)?image/[0-9a-f]{8}\.png", re.I)
_IN_IMAGE = re.compile(r"\s+(?:in|from|of|on)\s+(?:the|this)\s+(?:image|picture|photo)\b", re.I)
_HELP = {"", "help", "tools", "?", "帮助", "工具"}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")  # Chinese, Japanese, Korean
_NEWEST = {"latest", "newest", "last"}


@dataclass(frozen=True)
class Route:
    tool: str
    patterns: tuple[re.Pattern[str], ...]
    keywords: re.Pattern[str] | None
    also: re.Pattern[str] | None
    strip: tuple[re.Pattern[str], ...]

    def match(self, text: str) -> tuple[list[str], dict[str, str]] | None:
        """(text values, named arguments) this route takes from the request, or None when it does not apply.

        Groups a and b are text values in order; a group named like an argument (width) fills it.
        """
        for pattern in self.patterns:
            found = pattern.search(text)
            if found:
                named = {k: v.strip() for k, v in found.groupdict().items() if v and k not in ("a", "b")}
                values = [
                    _IN_IMAGE.sub("", found.group(g)).strip() for g in ("a", "b") if found.groupdict().get(g)
                ]
                return values or [self.clean(text)], named
        if self.keywords and self.keywords.search(text) and (self.also is None or self.also.search(text)):
            return [self.clean(text)], {}
        return None

    def clean(self, text: str) -> str:
        stripped = text
        for pattern in self.strip:
            stripped = pattern.sub("", stripped, count=1)
        return stripped.strip(" ,，:：") or text


def _words(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    parts = [rf"\b{re.escape(w)}s?\b" if w.isascii() else re.escape(w) for w in words]
    return re.compile("|".join(parts), re.I)


class RulesBrain:
    @cached_property
    def routes(self) -> list[Route]:
        table = load_yaml("rules.yaml")["routes"]
        return [
            Route(
                r["tool"],
                tuple(re.compile(p, re.I) for p in r.get("patterns", [])),
                _words(r.get("keywords", [])),
                _words(r.get("also", [])),
                tuple(re.compile(p, re.I) for p in r.get("strip", [])),
            )
            for r in table
        ]

    def respond(
        self, messages: list[BaseMessage], tools: list[Tool], turn: TurnInfo, timeout: float
    ) -> AIMessage:
        last_user = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
        results = [m for m in messages[last_user + 1 :] if isinstance(m, ToolMessage)]
        if results:
            lines = [_summary(m, turn.language) for m in results]
            calls = [c for m in messages[last_user + 1 :] if isinstance(m, AIMessage) for c in m.tool_calls]
            if any(_CJK.search(v) for c in calls for v in c["args"].values() if isinstance(v, str)):
                lines.append(message("rules_untranslated", turn.language))
            return AIMessage(content="\n".join(lines))
        by_name = {t.name: t for t in tools}
        text = turn.text.strip()
        if text.startswith("/"):
            return self._command(text[1:], by_name, turn)
        if not text and turn.uploads:
            return AIMessage(content=message("rules_received", turn.language, names=", ".join(turn.uploads)))
        plain = _IMAGE_REF.sub("the image", text).strip()
        for route in self.routes:
            found = route.match(plain) if route.tool in by_name and plain else None
            if found is not None:
                return _call(by_name[route.tool], found[1], found[0], turn)
        return _help(tools, turn.language)

    def _command(self, command: str, tools: dict[str, Tool], turn: TurnInfo) -> AIMessage:
        name, _, rest = command.strip().partition(" ")
        if name.lower() in _HELP:
            return _help(list(tools.values()), turn.language)
        if name.lower() == "kb" and "knowledge_search" in tools:  # /kb NAME question
            base, _, question = rest.strip().partition(" ")
            return _tool_message("knowledge_search", {"kb": base, "question": question.strip()})
        try:
            tokens = shlex.split(rest)
        except ValueError:  # an unbalanced quote: take the words as they are
            tokens = rest.split()
        named = dict(t.split("=", 1) for t in tokens if re.match(r"^[A-Za-z_]\w*=", t))
        words = " ".join(t for t in tokens if not re.match(r"^[A-Za-z_]\w*=", t))
        if name not in tools:  # the session answers with the list of real tools
            return _tool_message(name, named)
        return _call(tools[name], named, [words] if words else [], turn)


def _call(tool: Tool, args: dict[str, Any], values: list[str], turn: TurnInfo) -> AIMessage:
    """A tool call: given arguments, then text values for its text arguments, then images."""
    texts = [p for p in tool.params if p.kind is str and p.name not in args]
    for param, value in zip(sorted(texts, key=lambda p: not p.required), values, strict=False):
        args[param.name] = value
    for param in tool.params:  # /tool image=latest
        if param.kind == "image" and str(args.get(param.name, "")).lower() in _NEWEST and turn.images:
            args[param.name] = turn.images[-1]
    mentioned = [f"image/{m}.png" for m in _IMAGE.findall(turn.text) if f"image/{m}.png" in turn.images]
    free = [p for p in tool.params if p.kind == "image" and p.name not in args]
    for index, param in enumerate(free):
        if index < len(mentioned):
            args[param.name] = mentioned[index]
        elif index == 0 and param.required and turn.images:
            args[param.name] = turn.images[-1]
        elif param.required and not turn.images:
            return AIMessage(content=message("rules_needs_image", turn.language, tool=tool.name))
    return _tool_message(tool.name, args)


def _tool_message(name: str, args: dict[str, Any]) -> AIMessage:
    return AIMessage(content="", tool_calls=[tool_call(name=name, args=args, id=new_call_id())])


def _summary(result: ToolMessage, language: str) -> str:
    text = str(result.content)
    if result.status == "error" or text.startswith("Error: "):
        return message("rules_failed", language, tool=result.name, error=text.removeprefix("Error: "))
    return message("rules_done", language, tool=result.name, output=text)


def _help(tools: list[Tool], language: str) -> AIMessage:
    return AIMessage(content=message("rules_help", language, tools=", ".join(t.name for t in tools) or "-"))
