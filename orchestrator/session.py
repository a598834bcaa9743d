"""A session: one browser tab, API caller or CLI run. It owns its images, history and tool-call trace."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation_models.fastpath import is_out_of_memory

from .errors import OrchestratorError, ToolError
from .images import ImageStore
from .tools import Progress, ToolContext

if TYPE_CHECKING:
    from .engine import Orchestrator
    from .events import Event, TurnResult

log = logging.getLogger(__name__)


@dataclass
class ToolCall:
    """One tool call as every front end shows it."""

    tool: str
    args: dict[str, Any]
    output: str = ""  # the observation the brain reads
    images: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "args": self.args, "output": self.output, "images": self.images,
                "error": self.error, "seconds": round(self.seconds, 3)}  # fmt: skip


class Session:
    def __init__(self, orchestrator: Orchestrator, folder: Path, session_id: str):
        self.orchestrator = orchestrator
        self.id = session_id
        self.folder = folder
        self.images = ImageStore(folder, orchestrator.image_limits)
        self.trace: list[ToolCall] = []
        self.history: list[dict[str, Any]] = []  # chat messages, kept by the brain
        self.language = "en"
        self.notices: set[str] = set()  # notices already shown once (e.g. the rules-brain fallback)
        self.last_active = time.time()
        # Held for the whole of a turn. A plain Lock, not an RLock: Gradio advances a stream from
        # worker threads that may differ step to step, and nothing inside a turn starts another.
        self._turn_lock = threading.Lock()

    def stream(
        self, text: str, images: Sequence[Any] = (), language: str | None = None
    ) -> Generator[Event, None, None]:
        """One user turn, step by step (Notice, ToolStarted, ToolProgress, ToolFinished, ReplyDelta, TurnFinished).

        ``images`` are uploads (paths, bytes or PIL images) stored before the turn; one that is refused
        is explained in the reply and the turn goes on. The reply's language is detected from the text
        of each turn; ``language`` ("en"/"zh", e.g. the UI's switch) decides when the text has no words
        to tell (an upload alone, a slash command).

        One turn at a time: a turn started while another runs on this session (in another thread) waits
        until that one has yielded its TurnFinished, raised, or been closed or dropped. In one thread,
        read a stream to its TurnFinished (or close it) before the next turn, or the thread waits for itself.
        """
        from .agent import run_turn

        self.last_active = time.time()
        return self._one_turn(run_turn(self, text, list(images), language))

    def _one_turn(self, turn: Generator[Event, None, Any]) -> Generator[Event, None, None]:
        """``turn`` under the session's lock, from its first step until its TurnFinished (the next turn
        may start while the caller reads that one), an error, or the caller closing or dropping it."""
        from .events import TurnFinished

        finished = None
        with self._turn_lock, closing(turn):
            self.last_active = time.time()
            for event in turn:
                if isinstance(event, TurnFinished):
                    finished = event
                    break
                yield event
        if finished is not None:
            yield finished

    def chat(self, text: str, images: Sequence[Any] = (), language: str | None = None) -> TurnResult:
        """One user turn: the reply, the images made or uploaded, and the tool calls."""
        from .events import TurnFinished

        for event in self.stream(text, images, language):
            if isinstance(event, TurnFinished):
                return event.result
        raise AssertionError("a turn always ends with TurnFinished")

    def upload(self, data: Any, filename: str | None = None) -> str:
        """Store an uploaded image (bytes, path or PIL image); returns its name. Raises ImageError."""
        self.last_active = time.time()
        return self.images.add_upload(data, filename)

    def call_tool(
        self, name: str, args: Any = None, report: Callable[[Progress], None] | None = None
    ) -> ToolCall:
        """Run one tool. Every failure a person or a model can act on ends up in ``ToolCall.error``.

        Not serialized with turns (a turn's own tool calls come here from a worker thread while it holds
        the turn lock): a script that calls a tool while a turn runs shares the turn's trace and images.
        """
        self.last_active = time.time()
        record = ToolCall(name, dict(args) if isinstance(args, dict) else {"_raw": args})
        started = time.perf_counter()
        try:
            record.output = self._run(name, args, record, report or (lambda p: None))
        except OrchestratorError as exc:
            record.error = str(exc)
        except Exception as exc:  # a bug in a tool or a library: logged in full, the session goes on
            log.exception("tool %s failed", name)
            record.error = (
                f"{name} failed unexpectedly ({type(exc).__name__}: {str(exc)[:200]}); see the log."
            )
        finally:
            record.seconds = time.perf_counter() - started
            if record.error:
                record.output = f"Error: {record.error}"
            self.trace.append(record)
        return record

    def _run(self, name: str, args: Any, record: ToolCall, report: Callable[[Progress], None]) -> str:
        tools = self.orchestrator.tools
        if name not in tools:
            raise ToolError(
                f"There is no tool named '{name}'; available tools: {', '.join(tools) or 'none'}."
            )
        tool = tools[name]
        kwargs = tool.validate(args, self.images)
        record.args = kwargs
        manager = self.orchestrator.manager
        for attempt in (1, 2):
            ctx = ToolContext(
                name,
                tool.card,
                self.images,
                _Models(manager, report, name),
                self.orchestrator.card_options(tool.card),
                report,
                self.orchestrator.card_options,
                args=kwargs,
            )
            try:
                output = tool.fn(ctx, **kwargs)
                record.images = list(ctx.outputs)
                return output
            except Exception as exc:
                record.images = list(ctx.outputs)  # images made before a failure are kept
                if not is_out_of_memory(exc):
                    raise
                devices = manager.devices_of(tool.card)
                if attempt == 1:
                    log.warning("out of memory in %s on %s; evicting and retrying once", name, devices)
                    manager.free_memory(devices, keep=self.orchestrator.cards.with_dependencies([tool.card]))
                    continue
                raise ToolError(
                    f"{name} ran out of memory on {', '.join(devices)} even after unloading other models; "
                    f"try a smaller image, or give {tool.card} its own device or a larger --max-vram."
                ) from exc
        raise AssertionError("unreachable")


class _Models:
    """The manager as a tool sees it: ``use(card)`` with 'loading X on D' reported as progress."""

    def __init__(self, manager: Any, report: Callable[[Progress], None], tool: str):
        self._manager, self._report, self._tool = manager, report, tool

    def use(self, card: str) -> Any:
        return self._manager.use(card, lambda message: self._report(Progress(self._tool, message)))
