"""The Gradio chat app (``python gradio_app.py`` / ``python -m orchestrator ui``; its flags are in
``orchestrator/cli/ui.py``).

Importing this package is cheap: Gradio is imported when the app is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr

    from ..engine import Orchestrator

__all__ = ["build_app", "launch", "mount"]


def build_app(orchestrator: Orchestrator, **kwargs: Any) -> gr.Blocks:
    from .app import build_app as build

    return build(orchestrator, **kwargs)


def launch(demo: gr.Blocks, orchestrator: Orchestrator, **kwargs: Any) -> Any:
    from .app import launch as serve

    return serve(demo, orchestrator, **kwargs)


def mount(demo: gr.Blocks, orchestrator: Orchestrator, app: Any, **kwargs: Any) -> Any:
    from .app import mount as attach

    return attach(demo, orchestrator, app, **kwargs)
