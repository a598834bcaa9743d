"""The Gradio app: layout and wiring. Every event goes to ``Handlers``; nothing here runs a model.

    demo = build_app(orchestrator)
    launch(demo, orchestrator, host="127.0.0.1", port=7860)

API (``gradio_client``): ``/chat`` takes ``({"text": ..., "files": [handle_file(...)]}, "en"|"zh")`` and
returns ``(reply, [image files], [tool calls])``; ``/clear`` starts the caller's session afresh.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gradio as gr

from .handlers import Handlers
from .i18n import Strings, language_choices
from .knowledge import knowledge_panel
from .knowledge import wire as wire_knowledge
from .panel import CSS
from .sessions import SessionPool

if TYPE_CHECKING:
    from ..engine import Orchestrator

log = logging.getLogger(__name__)

APP_CSS = CSS + "#vo-chat .message img { min-height: 128px; max-height: 420px; object-fit: contain; }\n"
THEME = gr.themes.Soft(
    primary_hue="indigo",
    font=["ui-sans-serif", "system-ui", "sans-serif"],  # local fonts: the page asks no other server
    font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
)
PRIVATE = {"api_visibility": "private", "queue": False}  # UI-only events, not part of the API


def turn_concurrency(orchestrator: Orchestrator, per_device: int = 1) -> int:
    """How many turns may run at once: ``per_device`` for each device the loaded models use.

    The model manager's per-device lock keeps one model running per device; the queue keeps the rest
    of the turns (brain calls, uploads) from piling up behind it.
    """
    devices = {placement.device for placement in orchestrator.plan.placements.values()}
    return max(1, per_device) * max(1, len(devices))


def examples_for(orchestrator: Orchestrator, strings: Strings, limit: int = 4) -> list[list[dict[str, Any]]]:
    """Example messages for the tools this app has loaded, in the chosen language."""
    texts = [text for tool, text in strings.examples.items() if tool in orchestrator.tools]
    return [[{"text": text, "files": []}] for text in texts[:limit]]


def tools_markdown(orchestrator: Orchestrator) -> str:
    lines = [
        f"- **/{name}**: {tool.description.split('. ')[0].rstrip('.')}."
        for name, tool in orchestrator.tools.items()
    ]
    return "\n".join(lines) or "-"


def build_app(
    orchestrator: Orchestrator,
    *,
    per_device_concurrency: int = 1,
    queue_size: int = 64,
    idle_seconds: float = 6 * 3600,
    language: str = "en",
    persona: str | None = None,
) -> gr.Blocks:
    """The chat app over ``orchestrator``: one session per browser tab, created on its first message.
    ``persona``: the one chosen when a tab opens (each tab may choose another, before or during its chat)."""
    handlers = Handlers(orchestrator, SessionPool(orchestrator, idle_seconds=idle_seconds))
    limit = turn_concurrency(orchestrator, per_device_concurrency)
    with gr.Blocks(title="Visual Orchestrator", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        ui = _layout(orchestrator, handlers, Strings(language), persona)
        ui.textbox.submit(
            handlers.respond, [ui.textbox, ui.chatbot, ui.language, ui.persona, ui.refine],
            [ui.chatbot, ui.textbox, ui.models],
            api_visibility="private", concurrency_limit=limit, concurrency_id="turn",
        ).then(handlers.after_turn, [ui.language], [ui.textbox, ui.models], **PRIVATE)  # fmt: skip
        ui.examples.click(handlers.example_text, [ui.examples], [ui.textbox], **PRIVATE)
        ui.clear.click(
            handlers.clear, [ui.language], [ui.chatbot, ui.textbox, ui.models], api_name="clear", queue=False
        )
        ui.chatbot.clear(handlers.clear, [ui.language], [ui.chatbot, ui.textbox, ui.models], **PRIVATE)
        ui.refresh.click(handlers.panel_for, [ui.language], [ui.models], **PRIVATE)
        ui.persona.change(handlers.persona_info, [ui.persona, ui.language], [ui.persona_info], **PRIVATE)
        demo.load(handlers.panel_for, [ui.language], [ui.models], **PRIVATE)
        demo.unload(handlers.close_tab)
        wire_knowledge(ui.knowledge, handlers, ui.language)
        relabeled = [ui.header, ui.chatbot, ui.textbox, ui.examples, ui.clear, ui.language, ui.models_title,
                     ui.models, ui.refresh, ui.tools]  # fmt: skip
        ui.language.change(lambda code: _relabel(orchestrator, handlers, Strings(code)), [ui.language], relabeled,
                           **PRIVATE)  # fmt: skip
        ui.api_button.click(
            handlers.api_chat, [ui.api_message, ui.language], [ui.api_reply, ui.api_images, ui.api_steps],
            api_name="chat", concurrency_limit=limit, concurrency_id="turn",
        )  # fmt: skip
    demo.queue(max_size=queue_size, default_concurrency_limit=limit)
    return demo


def _layout(
    orchestrator: Orchestrator, handlers: Handlers, strings: Strings, persona: str | None
) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row(equal_height=True):
        with gr.Column(scale=4):
            ui.header = gr.Markdown(_header(strings))
        with gr.Column(scale=1, min_width=280):
            ui.language = gr.Radio(language_choices(), value=strings.language, label=strings["language"])
            ui.persona = gr.Dropdown(handlers.persona_choices(strings), value=persona or "",
                                     label=strings["persona"], elem_id="vo-persona")  # fmt: skip
            ui.persona_info = gr.Markdown(handlers.persona_info(persona or "", strings.language))
            ui.refine = gr.Slider(0, 4, value=orchestrator.settings.refine_rounds, step=1, label=strings["refine"],
                                  info=strings["refine_info"], elem_id="vo-refine")  # fmt: skip
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            ui.chatbot = gr.Chatbot(
                label=strings["chat_label"], placeholder=strings["chat_placeholder"], elem_id="vo-chat",
                height="64vh", buttons=["copy", "copy_all"], feedback_options=None, layout="bubble",
            )  # fmt: skip
            with gr.Row(equal_height=True):
                ui.textbox = gr.MultimodalTextbox(
                    placeholder=strings["textbox_placeholder"], file_types=["image"], file_count="multiple",
                    sources=["upload"], show_label=False, autofocus=True, elem_id="vo-input", scale=12,
                )  # fmt: skip
                ui.clear = gr.Button(strings["clear"], scale=1, min_width=90, elem_id="vo-clear")
            ui.examples = gr.Dataset(
                components=[ui.textbox],
                samples=examples_for(orchestrator, strings),
                label=strings["examples"],
            )
        with gr.Column(scale=1, min_width=280):
            ui.models_title = gr.Markdown(f"### {strings['models']}")
            ui.models = gr.HTML(handlers.panel(strings), elem_id="vo-models")
            ui.refresh = gr.Button(strings["refresh"], size="sm")
            with gr.Accordion(strings.format("tools", count=len(orchestrator.tools)), open=False) as ui.tools:
                gr.Markdown(tools_markdown(orchestrator))
            ui.knowledge = knowledge_panel(handlers, strings)
    with gr.Column(visible=False):  # the API endpoint's own components (gradio_client: /chat)
        ui.api_message = gr.MultimodalTextbox(file_types=["image"], file_count="multiple", label="message")
        ui.api_reply = gr.Textbox(label="reply")
        ui.api_images = gr.File(file_count="multiple", label="images")
        ui.api_steps = gr.JSON(label="tool_calls")
        ui.api_button = gr.Button("chat")
    return ui


def _header(strings: Strings) -> str:
    return f"## {strings['title']}\n{strings['subtitle']}"


def _relabel(orchestrator: Orchestrator, handlers: Handlers, strings: Strings) -> list[Any]:
    """Every visible text in the newly chosen language (in the order of ``relabeled``)."""
    return [
        _header(strings),
        gr.Chatbot(label=strings["chat_label"], placeholder=strings["chat_placeholder"]),
        gr.MultimodalTextbox(placeholder=strings["textbox_placeholder"]),
        gr.Dataset(samples=examples_for(orchestrator, strings), label=strings["examples"]),
        gr.Button(strings["clear"]),
        gr.Radio(label=strings["language"]),
        f"### {strings['models']}",
        handlers.panel(strings),
        gr.Button(strings["refresh"]),
        gr.Accordion(label=strings.format("tools", count=len(orchestrator.tools))),
    ]


def mount(demo: gr.Blocks, orchestrator: Orchestrator, app: Any, *, auth: list[tuple[str, str]] | None = None,
          host: str = "127.0.0.1", port: int = 7860) -> Any:  # fmt: skip
    """The chat app mounted at ``/`` of another FastAPI app (the API's: ``gradio_app.py --api``), as ``launch``
    would serve it; serve the result with uvicorn."""
    orchestrator.session_root.mkdir(parents=True, exist_ok=True)
    return gr.mount_gradio_app(app, demo, path="/", server_name=host, server_port=port, auth=auth or None,
                               theme=THEME, css=APP_CSS, max_file_size=orchestrator.image_limits.max_upload_bytes,
                               allowed_paths=[str(orchestrator.session_root)], footer_links=["api"])  # fmt: skip


def launch(
    demo: gr.Blocks,
    orchestrator: Orchestrator,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    auth: list[tuple[str, str]] | None = None,
    share: bool = False,
    **kwargs: Any,
) -> Any:
    """``demo.launch`` with the app's theme, the upload size limit and access to the session folders."""
    if host not in ("127.0.0.1", "localhost", "::1") and not auth:
        log.warning("serving on %s without --auth: anyone who can reach this machine can use the app", host)
    orchestrator.session_root.mkdir(parents=True, exist_ok=True)
    return demo.launch(
        server_name=host,
        server_port=port,
        auth=auth or None,
        share=share,
        theme=THEME,
        css=APP_CSS,
        max_file_size=orchestrator.image_limits.max_upload_bytes,
        allowed_paths=[str(orchestrator.session_root)],
        footer_links=["api"],
        **kwargs,
    )
