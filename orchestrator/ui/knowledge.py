"""The knowledge-base panel: pick the chat's base (``Session.knowledge_base``) and upload documents into one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gradio as gr

from ..errors import OrchestratorError
from .i18n import Strings

if TYPE_CHECKING:
    from .handlers import Handlers


def knowledge_panel(handlers: Handlers, strings: Strings) -> SimpleNamespace:
    """The components, inside the caller's column; ``wire`` connects them."""
    ui = SimpleNamespace()
    with gr.Accordion(strings["knowledge"], open=False):
        ui.picker = gr.Dropdown(_choices(handlers, strings), value="", label=strings["knowledge"],
                                elem_id="vo-kb-picker", allow_custom_value=True)  # fmt: skip
        ui.active = gr.Markdown(strings.format("knowledge_active", name=strings["knowledge_none"]))
        ui.upload = gr.File(label=strings["knowledge_upload"], file_count="multiple", elem_id="vo-kb-upload",
                            file_types=[".pdf", ".docx", ".html", ".htm", ".md", ".txt"])  # fmt: skip
    return ui


def wire(ui: SimpleNamespace, handlers: Handlers, language: Any) -> None:
    private = {"api_visibility": "private", "queue": False}
    ui.picker.change(lambda name, code, request: pick(handlers, name, Strings(code), request),
                     [ui.picker, language], [ui.active], **private)  # fmt: skip
    ui.upload.upload(lambda files, name, code, request: upload(handlers, files, name, Strings(code), request),
                     [ui.upload, ui.picker, language], [ui.picker, ui.active, ui.upload],
                     api_visibility="private")  # fmt: skip


def _choices(handlers: Handlers, strings: Strings) -> list[tuple[str, str]]:
    return [(strings["knowledge_none"], "")] + [(n, n) for n in handlers.orchestrator.knowledge.names()]


def pick(handlers: Handlers, name: str | None, strings: Strings, request: gr.Request) -> str:
    """The tab's session searches ``name`` from now on (nothing: every base)."""
    session = handlers.pool.get(request.session_hash).session
    session.knowledge_base = name or None
    return strings.format("knowledge_active", name=name or strings["knowledge_none"])


def upload(handlers: Handlers, files: list[Any] | None, name: str | None, strings: Strings,
           request: gr.Request) -> tuple[Any, str, Any]:  # fmt: skip
    """Add the files to the picked base (created if new); one sentence on what was refused."""
    orchestrator = handlers.orchestrator
    paths = [Path(getattr(f, "name", f)) for f in files or []]
    if not name:
        gr.Warning(strings["knowledge_new"])
        return gr.skip(), gr.skip(), None
    try:
        report = orchestrator.knowledge.get(name, create=True).add(paths, orchestrator.embedder())
    except OrchestratorError as exc:
        gr.Warning(str(exc))
        return gr.skip(), gr.skip(), None
    gr.Info(strings.format("knowledge_added", name=name, added=len(report.added), updated=len(report.updated),
                           unchanged=len(report.unchanged), chunks=report.chunks))  # fmt: skip
    active = pick(handlers, name, strings, request)
    return gr.Dropdown(choices=_choices(handlers, strings), value=name), active, None
