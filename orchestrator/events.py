"""What a turn yields, step by step, and the records they carry: every front end (UI, CLI, API) renders
these and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToolCall:
    """One tool call as every front end shows it (and as the session's trace keeps it)."""

    tool: str
    args: dict[str, Any]
    output: str = ""  # the observation the brain reads
    images: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    sources: list[str] = field(
        default_factory=list
    )  # what it read, for the reply to cite (URLs, file and page)
    batch: int = 1  # the calls (this one's included) whose pictures one pipeline call made, batching.py

    def as_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "args": self.args, "output": self.output, "images": self.images,
                "error": self.error, "seconds": round(self.seconds, 3), "sources": self.sources,
                "batch": self.batch}  # fmt: skip


@dataclass(frozen=True)
class Notice:
    """Something the user should know once (e.g. "no LLM configured: using the rules brain")."""

    text: str


@dataclass(frozen=True)
class ImageStored:
    """An upload of this turn was stored as ``name`` (a refused one yields none; the reply explains it)."""

    name: str  # the session's image name, e.g. image/1a2b3c4d.png
    filename: str | None  # the uploaded file's name, None for bytes or a PIL image


@dataclass(frozen=True)
class ToolStarted:
    call_id: str
    tool: str
    args: dict[str, Any]


@dataclass(frozen=True)
class ToolProgress:
    call_id: str
    tool: str
    message: str  # "loading Text2Image on cuda:0", "step 3/20", ...
    step: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class ToolFinished:
    call_id: str
    call: ToolCall


@dataclass(frozen=True)
class ReplyDelta:
    """A piece of the reply as the brain writes it: front ends append it to the reply being shown.

    Text written before a tool call stays above that call's step; the next piece after a ToolStarted begins a
    new message. ``replace``: the text replaces the reply shown since the last tool step (the turn ended
    otherwise than the stream suggested, e.g. a server that broke off mid-reply).
    """

    text: str
    replace: bool = False


@dataclass
class TurnResult:
    user: str
    reply: str = ""
    images: list[str] = field(default_factory=list)  # image names made or uploaded in this turn
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: str | None = (
        None  # set when the turn could not do what was asked (brain unreachable, upload refused)
    )


@dataclass(frozen=True)
class TurnFinished:
    result: TurnResult


Event = Notice | ImageStored | ToolStarted | ToolProgress | ToolFinished | ReplyDelta | TurnFinished
