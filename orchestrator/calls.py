"""A tool call, executed in one place for every caller (a turn's brain, a script's ``Session.call_tool``).

``execute`` checks the arguments and image names (``Tool.validate``), runs the tool with its progress
reported, turns every failure a person or a model can act on into ``ToolCall.error`` (the observation the
brain reads), evicts other models and retries once on CUDA out-of-memory, and appends the record to the
session's trace. ``stream`` is the same call in a worker thread with its progress as events; ``refuse``
records a call that will not run.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any

from PIL import Image

from foundation_models.fastpath import is_out_of_memory

from .errors import OrchestratorError, ToolError
from .events import Event, ToolCall, ToolFinished, ToolProgress, ToolStarted
from .remote import RemoteTools
from .tools import Progress, Tool, ToolContext

if TYPE_CHECKING:
    from .batching import Batcher
    from .session import Session

log = logging.getLogger(__name__)
Report = Callable[[Progress], None]


def execute(session: Session, name: str, args: Any = None, report: Report | None = None) -> ToolCall:
    """Run one tool now, in this thread; the record is also appended to ``session.trace``.

    Not serialized with turns (a turn's own tool calls come here from a worker thread while it holds
    the turn lock): a script that calls a tool while a turn runs shares the turn's trace and images.
    """
    session.last_active = time.time()
    record = ToolCall(name, _shown_args(args))
    started = time.perf_counter()
    try:
        record.output = _run(session, name, args, record, report or (lambda p: None))
    except OrchestratorError as exc:
        record.error = str(exc)
    except Exception as exc:  # a bug in a tool or a library: logged in full, the session goes on
        log.exception("tool %s failed", name)
        record.error = f"{name} failed unexpectedly ({type(exc).__name__}: {str(exc)[:200]}); see the log."
    finally:
        record.seconds = time.perf_counter() - started
        if record.error:
            record.output = f"Error: {record.error}"
        session.trace.append(record)
    return record


def stream(session: Session, call_id: str, name: str, args: Any) -> Generator[Event, None, ToolCall]:
    """``execute`` in a worker thread, its progress (loading, steps) yielded as it happens; returns the record."""
    yield ToolStarted(call_id, name, _shown_args(args))
    reports: queue.Queue[Any] = queue.Queue()
    done, records = object(), []

    def work() -> None:
        try:
            records.append(execute(session, name, args, report=reports.put))
        finally:
            reports.put(done)

    threading.Thread(target=work, name=f"tool-{name}", daemon=True).start()
    while (report := reports.get()) is not done:
        yield ToolProgress(call_id, name, report.message, report.step, report.total)
    if not records:
        raise RuntimeError(f"tool {name} did not return")
    yield ToolFinished(call_id, records[0])
    return records[0]


def refuse(
    session: Session, call_id: str, name: str, args: Any, error: str
) -> Generator[Event, None, ToolCall]:
    """A call that will not run (arguments the brain garbled, the turn's time or call limit): traced and
    shown like any other, its reason as the observation."""
    record = ToolCall(name, _shown_args(args), f"Error: {error}", error=error)
    session.trace.append(record)
    yield ToolStarted(call_id, name, record.args)
    yield ToolFinished(call_id, record)
    return record


def _shown_args(args: Any) -> dict[str, Any]:
    return dict(args) if isinstance(args, dict) else {"_raw": args}


def _run(session: Session, name: str, args: Any, record: ToolCall, report: Report) -> str:
    tools = session.orchestrator.tools
    if name not in tools:
        raise ToolError(f"There is no tool named '{name}'; available tools: {', '.join(tools) or 'none'}.")
    tool = tools[name]
    kwargs = tool.validate(args, session.images)
    record.args = kwargs
    remote = getattr(session.orchestrator, "remote", None)
    if remote is not None and remote.serves(tool.card):
        return _run_remote(session, remote, tool, kwargs, record, report)
    for attempt in (1, 2):
        ctx = _context(session, tool, kwargs, report)
        try:
            output = tool.fn(ctx, **kwargs)
            record.images, record.sources, record.batch = list(ctx.outputs), list(ctx.sources), ctx.batch
            return output
        except Exception as exc:
            record.images = list(ctx.outputs)  # images made before a failure are kept
            if not is_out_of_memory(exc):
                raise
            _out_of_memory(session, tool, exc, retrying=attempt == 1)
    raise AssertionError("unreachable")


def _run_remote(
    session: Session,
    remote: RemoteTools,
    tool: Tool,
    kwargs: dict[str, Any],
    record: ToolCall,
    report: Report,
) -> str:
    """The call on the replica that holds the tool's models; the images it made stored here, with their lineage
    (those made before a failure too)."""
    images = [kwargs[p.name] for p in tool.params if p.kind == "image" and kwargs.get(p.name)]
    inputs = {name: session.images.path(name).read_bytes() for name in images}
    result = remote.run(tool.card, tool.name, kwargs, inputs, report)
    output = result.output
    for made in result.images:
        with Image.open(io.BytesIO(made.png)) as picture:
            name = session.images.add(picture, tool=tool.name, args=kwargs, parents=list(made.parents),
                                      seed=made.seed, name=made.name)  # fmt: skip
        output = output.replace(made.name, name)  # the same name unless this session already had it
        record.images.append(name)
    record.sources = list(result.sources)
    if result.error:
        raise ToolError(result.error)
    return output


def _context(session: Session, tool: Tool, kwargs: dict[str, Any], report: Report) -> ToolContext:
    orchestrator = session.orchestrator
    models = _Models(orchestrator.manager, orchestrator.batcher, report, tool.name)
    return ToolContext(tool.name, tool.card, session.images, models, orchestrator.card_options(tool.card), report,
                       orchestrator.card_options, args=kwargs, knowledge=orchestrator.knowledge,
                       knowledge_base=session.knowledge_base)  # fmt: skip


def _out_of_memory(session: Session, tool: Tool, exc: Exception, retrying: bool) -> None:
    """Free the tool's devices of other models for the one retry; after it, raise what to do instead."""
    manager = session.orchestrator.manager
    devices = manager.devices_of(tool.card)
    if retrying:
        log.warning("out of memory in %s on %s; evicting and retrying once", tool.name, devices)
        manager.free_memory(devices, keep=session.orchestrator.cards.with_dependencies([tool.card]))
        return
    raise ToolError(
        f"{tool.name} ran out of memory on {', '.join(devices)} even after unloading other models; "
        f"try a smaller image, or give {tool.card} its own device or a larger --max-vram."
    ) from exc


class _Models:
    """The manager as a tool sees it: ``use(card)`` and ``batched(...)``, 'loading X on D' reported as progress."""

    def __init__(self, manager: Any, batcher: Batcher, report: Report, tool: str):
        self._manager, self._batcher, self._report, self._tool = manager, batcher, report, tool

    def use(self, card: str) -> Any:
        return self._manager.use(card, self._loading)

    def batched(self, card: str, item: Any, settings: Mapping[str, Any],
                progress: Callable[[int, int], None] | None) -> tuple[Any, int]:  # fmt: skip
        return self._batcher.run(card, item, settings, progress, self._loading)

    def _loading(self, message: str) -> None:
        self._report(Progress(self._tool, message))
