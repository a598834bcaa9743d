"""Turn events into chat messages: each tool call a collapsible step, images inline, the reply streamed.

``TurnView`` holds the assistant side of one turn and is updated in place by ``apply(event)``; the
app yields ``history + view.messages`` after each event. Nothing here runs a model or talks to Gradio
beyond building ``gr.ChatMessage`` values.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from ..events import (
    Event,
    ImageStored,
    Notice,
    ReplyDelta,
    ToolFinished,
    ToolProgress,
    ToolStarted,
    TurnFinished,
)
from .i18n import Strings

BAR_WIDTH = 12
MAX_ARG_CHARS = 300


def image_content(name: str, path: str) -> dict[str, Any]:
    """An image in a chat message: shown inline, downloadable at full size, its name as alt text."""
    return {"path": path, "alt_text": name}


def user_message(text: str, images: list[tuple[str, str]], refused: list[str] = ()) -> gr.ChatMessage:
    """The user's bubble: the text, the stored images (name, path), and the names of refused files."""
    content: list[Any] = [image_content(name, path) for name, path in images]
    lines = [text] if text else []
    lines += [f"📎 ~~{name}~~" for name in refused]
    if images:
        lines.append(" ".join(f"`{name}`" for name, _ in images))
    if lines:
        content.insert(0, "\n\n".join(lines))
    return gr.ChatMessage(role="user", content=content)


def pair_uploads(
    files: list[str], stored: list[ImageStored], path_of: Callable[[str], Any]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Pair the files sent with the turn's ImageStored events (by file name, in order; two files may share one).

    Returns ([(image name, stored path)], [names of the files that were refused]).
    """
    left = list(stored)
    accepted, refused = [], []
    for file in files:
        match = next((event for event in left if event.filename == Path(file).name), None)
        if match is None:
            refused.append(Path(file).name)
            continue
        left.remove(match)
        accepted.append((match.name, str(path_of(match.name))))
    return accepted, refused


def format_args(args: dict[str, Any]) -> str:
    lines = []
    for key, value in args.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if len(text) > MAX_ARG_CHARS:
            text = text[: MAX_ARG_CHARS - 1] + "…"
        lines.append(f"- **{key}**: `{text}`" if "`" not in text else f"- **{key}**: {text}")
    return "\n".join(lines) or "-"


def progress_bar(step: int, total: int) -> str:
    done = round(BAR_WIDTH * min(step, total) / max(total, 1))
    return "▰" * done + "▱" * (BAR_WIDTH - done) + f" {step}/{total}"


@dataclass
class _Step:
    index: int  # position in TurnView.messages
    tool: str
    args: dict[str, Any]
    started: float
    lines: list[str] = field(default_factory=list)  # "loading X on cuda:0", ...
    bar: str = ""


@dataclass
class TurnView:
    strings: Strings
    image_path: Callable[[str], str]  # image name -> file path in the session folder
    shown: set[str] = field(default_factory=set)  # image names already in the chat (e.g. this turn's uploads)
    messages: list[gr.ChatMessage] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    _steps: dict[str, _Step] = field(default_factory=dict)
    _reply: int | None = None  # index of the message the reply streams into (since the last tool step)
    finished: bool = False

    def apply(self, event: Event) -> bool:
        """Update the messages for one event; True when the chat changed (the caller re-renders)."""
        if isinstance(event, Notice):
            self._add(gr.ChatMessage(content=f"ℹ️ {event.text}"))
        elif isinstance(event, ToolStarted):
            self._start(event)
        elif isinstance(event, ToolProgress):
            self._progress(event)
        elif isinstance(event, ToolFinished):
            self._finish(event)
        elif isinstance(event, ReplyDelta):
            if not event.text and not event.replace:
                return False
            if self._reply is None:
                self._add(gr.ChatMessage(content=""))
                self._reply = len(self.messages) - 1
            message = self.messages[self._reply]
            message.content = event.text if event.replace else message.content + event.text
        elif isinstance(event, TurnFinished):
            self._end(event)
        else:
            return False
        return True

    @property
    def reply(self) -> str:
        return "" if self._reply is None else str(self.messages[self._reply].content)

    # -- tool steps ------------------------------------------------------------------------------
    def _start(self, event: ToolStarted) -> None:
        self._reply = None  # text written before this call stays above it; the reply comes after it
        message = gr.ChatMessage(content="", metadata={"title": f"🛠️ {event.tool}", "status": "pending"})
        self._add(message)
        self._steps[event.call_id] = _Step(len(self.messages) - 1, event.tool, dict(event.args), self.clock())
        self._render(self._steps[event.call_id])

    def _progress(self, event: ToolProgress) -> None:
        step = self._steps.get(event.call_id)
        if step is None:  # progress without a start: show it as a step of its own
            self._start(ToolStarted(event.call_id, event.tool, {}))
            step = self._steps[event.call_id]
        if event.step is not None and event.total:
            step.bar = progress_bar(event.step, event.total)
        elif event.message not in step.lines:
            step.lines.append(event.message)
        message = self.messages[step.index]
        message.metadata["log"] = event.message
        self._render(step)

    def _finish(self, event: ToolFinished) -> None:
        call = event.call
        step = self._steps.get(event.call_id)
        if step is None:
            self._start(ToolStarted(event.call_id, call.tool, call.args))
            step = self._steps[event.call_id]
        step.args = dict(call.args) or step.args
        step.bar = ""
        message = self.messages[step.index]
        message.metadata = {"title": f"{'❌' if call.error else '🛠️'} {call.tool}", "status": "done",
                            "duration": round(call.seconds, 2)}  # fmt: skip
        if call.error:
            message.metadata["log"] = self.strings["error"]
        self._render(step, result=call.output, error=call.error)
        self._show_images(call.images)

    def _render(self, step: _Step, result: str = "", error: str | None = None) -> None:
        parts = [f"**{self.strings['arguments']}**\n{format_args(step.args)}"]
        mark = "✔" if result or error else "⏳"
        parts += [f"{mark} {line}" for line in step.lines]
        if step.bar:
            parts.append(step.bar)
        if error:
            parts.append(f"**{self.strings['error']}**: {error}")
        elif result:
            parts.append(f"**{self.strings['result']}**: {result}")
        self.messages[step.index].content = "\n\n".join(parts)

    # -- the end ---------------------------------------------------------------------------------
    def _end(self, event: TurnFinished) -> None:
        result = event.result
        for step in self._steps.values():  # a step the session never finished is not left spinning
            message = self.messages[step.index]
            if message.metadata.get("status") == "pending":
                message.metadata["status"] = "done"
                message.metadata["duration"] = round(self.clock() - step.started, 2)
        if not self.reply and result.reply:
            self.apply(ReplyDelta(result.reply))
        self._show_images(result.images)
        if not self.messages:
            self._add(gr.ChatMessage(content=self.strings["no_reply"]))
        self.finished = True

    def _show_images(self, names: list[str]) -> None:
        fresh = [n for n in names if n not in self.shown]
        if fresh:
            self._add(gr.ChatMessage(content=[image_content(n, self.image_path(n)) for n in fresh]))
            self.shown.update(fresh)

    def _add(self, message: gr.ChatMessage) -> None:
        self.messages.append(message)
        self._reply = None  # text after a step or an image starts a new paragraph of the reply
