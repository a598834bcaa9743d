"""A session: one browser tab, API caller or CLI run. It owns its images, history and tool-call trace."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .calls import execute
from .events import Event, ToolCall, TurnFinished, TurnResult
from .images import ImageStore
from .tools import Progress

RECORD = "history.json"  # the session's finished turns, as ``traces export`` reads them

if TYPE_CHECKING:
    from .engine import Orchestrator
    from .personas import Persona
    from .refine import Reader


class Session:
    def __init__(self, orchestrator: Orchestrator, folder: Path, session_id: str):
        self.orchestrator = orchestrator
        self.id = session_id
        self.folder = folder
        self.images = ImageStore(folder, orchestrator.image_limits)
        self.trace: list[ToolCall] = []
        self.history: list[dict[str, Any]] = []  # chat messages, kept by the brain
        self.turns: list[dict[str, Any]] = []  # the record of finished turns, saved to RECORD after each
        self.language = "en"
        self.knowledge_base: str | None = None  # the knowledge base knowledge_search reads when told no other
        self.notices: set[str] = set()  # notices already shown once (e.g. the rules-brain fallback)
        self.persona: Persona | None = None  # its prompt addition, language and tools (``use_persona``)
        self.refine_rounds = orchestrator.settings.refine_rounds  # check-and-retry rounds per generated image
        self.refine_reader: Reader | None = None  # what reads images back for that (None: the BLIP tools)
        self.last_active = time.time()
        # Held for the whole of a turn. A plain Lock, not an RLock: Gradio advances a stream from
        # worker threads that may differ step to step, and nothing inside a turn starts another.
        self._turn_lock = threading.Lock()

    def stream(
        self, text: str, images: Sequence[Any] = (), language: str | None = None
    ) -> Generator[Event, None, None]:
        """One user turn, step by step (Notice, ImageStored, ToolStarted, ToolProgress, ToolFinished, ReplyDelta,
        TurnFinished).

        ``images`` are uploads (paths, bytes or PIL images) stored before the turn, each an ImageStored; one
        that is refused is explained in the reply and the turn goes on. The reply's language is detected from the text
        of each turn; ``language`` ("en"/"zh", e.g. the UI's switch) decides when the text has no words
        to tell (an upload alone, a slash command).

        One turn at a time: a turn started while another runs on this session (in another thread) waits
        until that one has yielded its TurnFinished, raised, or been closed or dropped. In one thread,
        read a stream to its TurnFinished (or close it) before the next turn, or the thread waits for itself.
        """
        from .agent import run_turn  # here, not at the top: the agent imports LangChain, a session need not

        self.last_active = time.time()
        return self._one_turn(run_turn(self, text, list(images), language))

    def _one_turn(self, turn: Generator[Event, None, Any]) -> Generator[Event, None, None]:
        """``turn`` under the session's lock, from its first step until its TurnFinished (the next turn
        may start while the caller reads that one), an error, or the caller closing or dropping it."""
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

    def use_persona(self, persona: Persona | None) -> None:
        """From the next turn on, answer as ``persona`` (None: as the plain assistant). The history stays."""
        self.persona = persona
        if persona is not None and persona.language:
            self.language = persona.language

    def chat(self, text: str, images: Sequence[Any] = (), language: str | None = None) -> TurnResult:
        """One user turn: the reply, the images made or uploaded, and the tool calls."""
        for event in self.stream(text, images, language):
            if isinstance(event, TurnFinished):
                return event.result
        raise AssertionError("a turn always ends with TurnFinished")

    def record_turn(self, turn: dict[str, Any]) -> None:
        """Add a finished turn (``agent.turn_record``) to the session's record on disk (``history.json``)."""
        self.turns.append(turn)
        self._save_record()

    def clear(self) -> None:
        """Forget the history; the turns so far stay in the record, marked cleared (never used for training)."""
        self.history = []
        for turn in self.turns:
            turn["cleared"] = True
        self._save_record()

    def _save_record(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"version": 1, "session": self.id, "turns": self.turns}
        text = json.dumps(record, ensure_ascii=False, indent=1, default=str)
        partial = self.folder / f"{RECORD}.partial"
        partial.write_text(text, encoding="utf-8")
        partial.replace(self.folder / RECORD)  # a reader never sees half a file

    def upload(self, data: Any, filename: str | None = None) -> str:
        """Store an uploaded image (bytes, path or PIL image); returns its name. Raises ImageError."""
        self.last_active = time.time()
        return self.images.add_upload(data, filename)

    def call_tool(
        self, name: str, args: Any = None, report: Callable[[Progress], None] | None = None
    ) -> ToolCall:
        """Run one tool. Every failure a person or a model can act on ends up in ``ToolCall.error``.

        Not serialized with turns (see ``calls.execute``): a script that calls a tool while a turn runs
        shares the turn's trace and images.
        """
        return execute(self, name, args, report)
