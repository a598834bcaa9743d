"""The Gradio app served in-process on 127.0.0.1 for a test: ``with served(orchestrator) as url: ...``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(orchestrator: Any, **launch_options: Any) -> Iterator[str]:
    """Build the app over ``orchestrator``, serve it on a free loopback port, close it afterwards."""
    from orchestrator.ui import build_app, launch

    demo = build_app(orchestrator)
    port = free_port()
    launch(demo, orchestrator, port=port, prevent_thread_lock=True, quiet=True, **launch_options)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
