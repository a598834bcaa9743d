"""One replica of a deployment: an Orchestrator of its own cards, running each call through ``calls.stream``.

The replica holds the models (its own model manager, its own budgets); the session stays in the ingress. A
call brings its input images as PNG bytes under their session names; the tool runs on a scratch session that
holds only those, through the same call path as in one process (argument checks, progress, out-of-memory
retry, errors as observations), and the images it made go back as bytes with their parents and seeds.
Plain Python: ``ray_tools`` makes it a Serve deployment; nothing here imports Ray but the replica's id.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from PIL import Image

from ..calls import stream
from ..engine import Orchestrator
from ..events import ToolFinished, ToolProgress
from ..remote import MadeImage, RemoteResult
from ..settings import Settings

log = logging.getLogger(__name__)


class ToolReplica:
    """``call(tool, args, inputs)`` yields ``{"progress": (message, step, total)}`` items, then ``{"result": ...}``."""

    def __init__(self, load: str, settings: Settings, budgets: Mapping[str, int] | None = None):
        self.orchestrator = Orchestrator(load, settings=settings, max_vram=dict(budgets or {}), brain="rules")
        self.calls = 0
        self.where = _replica_id()
        log.info("replica %s serves %s (pid %d)", self.where, load, os.getpid())

    def call(
        self, tool: str, args: Mapping[str, Any], inputs: Mapping[str, bytes]
    ) -> Iterator[dict[str, Any]]:
        self.calls += 1
        with tempfile.TemporaryDirectory(prefix="vo-replica-") as folder:
            session = self.orchestrator.new_session(folder)
            for name, png in inputs.items():
                with Image.open(io.BytesIO(png)) as image:
                    session.images.add(image, tool="input", args={}, parents=[], seed=None, name=name)
            record = None
            for event in stream(session, "remote", tool, dict(args)):
                if isinstance(event, ToolProgress):
                    yield {"progress": (event.message, event.step, event.total)}
                elif isinstance(event, ToolFinished):
                    record = event.call
            assert record is not None
            made = tuple(_made(session.images, name) for name in record.images)
            output = "" if record.error else record.output
            yield {"result": RemoteResult(output, made, tuple(record.sources), record.error, self.where),
                   "calls": self.calls, "pid": os.getpid()}  # fmt: skip

    def info(self) -> dict[str, Any]:
        """Who this replica is (tests and the benchmark read it): its id, pid, calls so far, code location."""
        import orchestrator

        return {"replica": self.where, "pid": os.getpid(), "calls": self.calls, "code": orchestrator.__file__}


def _made(images: Any, name: str) -> MadeImage:
    lineage = images.lineage(name)
    return MadeImage(name, images.path(name).read_bytes(), tuple(lineage.parents), lineage.seed)


def _replica_id() -> str:
    """The Serve replica's id (its actor's name is SERVE_REPLICA::<app>#<deployment>#<id>), or this pid outside Serve."""
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not in a replica (a test of the class itself)
        return f"pid{os.getpid()}"
