"""What each Gradio event does: find the tab's session, hand it the turn, render what comes back.

These are thin: a turn and its uploads go to ``Session.stream`` (the browser) or ``Session.chat`` (the
API), which store the uploads (an ImageStored event each), explain a refused one in the reply and go on;
events become chat messages through ``render.TurnView``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from ..events import ImageStored, ReplyDelta, TurnFinished
from ..personas import Persona, load_personas
from .i18n import Strings
from .panel import models_html
from .render import TurnView, pair_uploads, user_message
from .sessions import SessionPool

if TYPE_CHECKING:
    from ..engine import Orchestrator
    from ..session import Session

log = logging.getLogger(__name__)


class Handlers:
    def __init__(self, orchestrator: Orchestrator, pool: SessionPool):
        self.orchestrator = orchestrator
        self.pool = pool

    # -- the browser ---------------------------------------------------------------------------
    def respond(
        self, message: dict[str, Any] | None, history: list[Any], language: str, persona: str | None,
        refine: float | None, request: gr.Request,
    ) -> Iterator[tuple[Any, Any, Any]]:  # fmt: skip
        """One turn in the chat, streamed: outputs (chatbot, textbox, models panel). ``persona``: the tab's;
        ``refine``: its check-and-retry rounds."""
        text, files = _split(message)
        if not text and not files:
            yield gr.skip(), gr.skip(), gr.skip()
            return
        strings = Strings(language)
        slot = self.pool.get(request.session_hash)
        if not slot.busy.acquire(blocking=False):
            gr.Warning(strings["busy"])
            yield gr.skip(), gr.skip(), gr.skip()
            return
        try:
            slot.session.refine_rounds = max(0, int(refine or 0))
            chosen = self.personas.get(persona or "")
            if slot.session.persona is not chosen:
                slot.session.use_persona(chosen)
            yield from self._turn(slot.session, text, files, list(history or []), strings)
        finally:
            slot.release()

    # -- personas --------------------------------------------------------------------------------
    @cached_property
    def personas(self) -> dict[str, Persona]:
        return load_personas(self.orchestrator.settings.persona_dir)

    def persona_choices(self, strings: Strings) -> list[tuple[str, str]]:
        return [(strings["no_persona"], ""), *((p.title, p.name) for p in self.personas.values())]

    def persona_info(self, name: str | None, language: str) -> str:
        persona = self.personas.get(name or "")
        if persona is None:
            return ""
        openers = "".join(f"\n- {line}" for line in persona.openers)
        return f"{persona.description}{openers}"

    def _turn(
        self, session: Session, text: str, files: list[str], history: list[Any], strings: Strings
    ) -> Iterator[tuple[Any, Any, Any]]:
        user = user_message(text, [(Path(f).name, f) for f in files])
        history.append(user)
        yield history, gr.MultimodalTextbox(value=None, interactive=False), gr.skip()
        view = TurnView(strings, lambda name: str(session.images.path(name)))
        stored: list[ImageStored] = []
        pending = bool(files)  # the bubble shows the files as sent until the session has stored them
        try:
            for event in session.stream(text, images=files, language=strings.language):
                rebuilt = False
                if isinstance(event, ImageStored):
                    stored.append(event)
                # a refused upload yields no event, so a turn with one is known only at its end
                if pending and (len(stored) == len(files) or isinstance(event, TurnFinished)):
                    accepted, refused = pair_uploads(files, stored, session.images.path)
                    history[-1] = user_message(text, accepted, refused)
                    view.shown.update(name for name, _ in accepted)
                    pending, rebuilt = False, True
                if view.apply(event) or rebuilt:
                    panel = gr.skip() if isinstance(event, ReplyDelta) else self.panel(strings)
                    yield [*history, *view.messages], gr.skip(), panel
        except Exception as exc:  # a bug below us: the tab keeps working, the log has the trace
            log.exception("turn failed in session %s", session.id)
            view.messages.append(
                gr.ChatMessage(content="⚠️ " + strings.format("failed", error=type(exc).__name__))
            )
            yield [*history, *view.messages], gr.skip(), self.panel(strings)

    def after_turn(self, language: str) -> tuple[Any, str]:
        """Re-enable the textbox (whatever happened in the turn) and refresh the models panel."""
        return gr.MultimodalTextbox(interactive=True), self.panel(Strings(language))

    def clear(self, language: str, request: gr.Request) -> tuple[list[Any], Any, str]:
        """Forget this tab's history and images; other tabs are untouched."""
        self.pool.reset(request.session_hash)
        return [], gr.MultimodalTextbox(value=None, interactive=True), self.panel(Strings(language))

    def close_tab(self, request: gr.Request) -> None:
        self.pool.drop(request.session_hash)

    def panel(self, strings: Strings) -> str:
        return models_html(self.orchestrator, strings)

    def panel_for(self, language: str) -> str:
        return self.panel(Strings(language))

    def example_text(self, sample: list[Any]) -> dict[str, Any]:
        return sample[0] if sample else {"text": "", "files": []}

    # -- the API -------------------------------------------------------------------------------
    def api_chat(
        self, message: dict[str, Any] | str | None, language: str, request: gr.Request
    ) -> tuple[str, list[str], list[dict[str, Any]]]:
        """One turn for an API caller: (reply, image files made in the turn, tool calls)."""
        text, files = _split(message)
        strings = Strings(language)
        slot = self.pool.get(request.session_hash)
        if not slot.busy.acquire(blocking=False):
            raise gr.Error(strings["busy"])
        try:
            result = slot.session.chat(text, images=files, language=strings.language)
            made = dict.fromkeys(name for call in result.tool_calls for name in call.images)
            paths = [str(slot.session.images.path(name)) for name in made]
        finally:
            slot.release()
        return result.reply, paths, [call.as_dict() for call in result.tool_calls]


def _split(message: dict[str, Any] | str | None) -> tuple[str, list[str]]:
    if isinstance(message, str):
        return message.strip(), []
    message = message or {}
    return str(message.get("text") or "").strip(), [str(f) for f in message.get("files") or []]
