"""A turn's events as the Markdown a chat app shows: the reply, each new image, each tool step folded away.

NextChat, Open WebUI and LobeChat render ``<details><summary>`` as a collapsible block and ``![alt](url)`` as an
image; the alt text is the image's name, which the next request maps back to the image (conversation.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..events import Event, ImageStored, Notice, ReplyDelta, ToolFinished, TurnFinished

MAX_ARG_CHARS = 300
MAX_RESULT_CHARS = 600


class Markdown:
    """Turns events into Markdown pieces, in order; ``url`` gives an image name's URL."""

    def __init__(self, url: Callable[[str], str]):
        self.url = url
        self.shown: set[str] = set()  # images already in the reply, or the user's own uploads
        self.text = ""  # everything produced so far

    def piece(self, event: Event) -> str:
        out = self._piece(event)
        self.text += out
        return out

    def _piece(self, event: Event) -> str:
        if isinstance(event, ImageStored):
            self.shown.add(event.name)
        elif isinstance(event, Notice):
            return f"> ℹ️ {event.text}\n\n"
        elif isinstance(event, ReplyDelta):
            if event.replace:
                return self._gap() + event.text
            return event.text
        elif isinstance(event, ToolFinished):
            return self._gap() + step(event) + self._images(event.call.images)
        elif isinstance(event, TurnFinished):
            return self._images(event.result.images, before=True)
        return ""

    def _gap(self) -> str:
        return (
            ""
            if not self.text or self.text.endswith("\n\n")
            else ("\n" if self.text.endswith("\n") else "\n\n")
        )

    def _images(self, names: list[str], before: bool = False) -> str:
        fresh = [n for n in names if n not in self.shown]
        self.shown.update(fresh)
        if not fresh:
            return ""
        lines = "\n\n".join(f"![{n}]({self.url(n)})" for n in fresh)
        return (self._gap() if before else "") + lines + "\n\n"


def step(event: ToolFinished) -> str:
    call = event.call
    args = []
    for key, value in call.args.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text = text if len(text) <= MAX_ARG_CHARS else text[: MAX_ARG_CHARS - 1] + "…"
        args.append(f"- **{key}**: `{text.replace('`', chr(39))}`")
    outcome = f"**Error**: {call.error}" if call.error else f"**Result**: {call.output[:MAX_RESULT_CHARS]}"
    mark = "❌" if call.error else "🛠️"
    body = "\n".join(args) or "-"
    return (f"<details><summary>{mark} {call.tool} ({call.seconds:.1f} s)</summary>\n\n{body}\n\n{outcome}\n\n"
            "</details>\n\n")  # fmt: skip
