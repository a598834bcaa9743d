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


@contextmanager
def served_api(orchestrator: Any, **options: Any) -> Iterator[str]:
    """The OpenAI-compatible API over ``orchestrator`` (``ApiOptions(**options)``) on a free loopback port, served
    by uvicorn in a thread; yields its base URL (``http://127.0.0.1:PORT/v1``)."""
    import threading
    import time

    import uvicorn

    from orchestrator.api import ApiOptions, create_app

    app = create_app(orchestrator, ApiOptions(**options))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
