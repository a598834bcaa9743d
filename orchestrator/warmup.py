"""Warm-up ahead of serving: load every model of the --load cards, call each tool, fill inductor's disk cache.

A tool's first call loads its models and runs eager; on CUDA the second captures CUDA graphs and queues a
background ``torch.compile`` of the diffusion blocks (foundation_models/fastpath/). ``warm_up`` makes those
calls on a drawn picture (and its edge map, for the ControlNets, which refuse a colour picture, and as the
inpainting mask), waits for the compiler and calls each tool again, round after round while those calls queue
more compiles, then times one more call of each tool: the speed a served request gets. Compiled code lands under
``$VISUAL_ORCHESTRATOR_CACHE/inductor``, and all of it that this process compiled or loaded is written to one file
as it ends (``$VISUAL_ORCHESTRATOR_CACHE/compiled/<GPU>-torch<version>.bin``, or ``--compiled FILE``), which a
server started later loads before its first compile, on this machine or on another with the same GPU and torch.

    report = warm_up(Orchestrator("Text2Image_cuda:0", brain="rules"), timeout=900)
    print([(row.tool, row.first_seconds, row.ready_seconds, row.error) for row in report.rows])
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .errors import SpecError
from .tools import Progress, Tool

if TYPE_CHECKING:
    from .engine import Orchestrator
    from .session import Session

log = logging.getLogger(__name__)

PICTURE_SIDE = 512
# Sample text for required string arguments, by name; any other one gets DEFAULT_TEXT.
SAMPLE_TEXT = {
    "prompt": "a red house under a blue sky",
    "question": "what is in the picture?",
    "instruction": "make it snowy",
    "object": "house",
    "replacement": "a castle",
    "text": "Visual Orchestrator 视觉",
}
DEFAULT_TEXT = "a house"
# Rounds of wait-then-call: each one captures graphs whose capture was put off while the compiler was busy.
MAX_ROUNDS = 6
OUTPAINT_MARGIN = 128  # required width/height (outpainting) = the picture's side plus this: one step


@dataclass
class Row:
    """One tool's warm-up: seconds of its first call (load + eager) and of its last (what serving gets)."""

    tool: str
    card: str
    device: str
    first_seconds: float | None = None
    ready_seconds: float | None = None
    error: str | None = None
    fast_fallback: str | None = None  # its fast path fell back to the plain call, and why
    compile_state: str | None = None  # "compiled", "compiling" or "eager" where its family compiles

    def as_dict(self) -> dict[str, Any]:
        def rounded(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds, 3)

        return {"tool": self.tool, "card": self.card, "device": self.device,
                "first_seconds": rounded(self.first_seconds), "ready_seconds": rounded(self.ready_seconds),
                "error": self.error, "fast_fallback": self.fast_fallback, "compile_state": self.compile_state}  # fmt: skip


@dataclass
class WarmupReport:
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    compile_ahead: bool = False  # on CUDA with the compiler on: it was waited for
    timed_out: bool = False  # the background compile did not finish within the timeout
    timeout: float = 0.0
    inductor_cache: str = ""
    note: str = ""
    compiled_loaded: str = ""  # what loading the compiled-code file did, in one sentence ("" when not asked)
    compiled_saved: str = ""  # what saving it did
    compiled_file: str = ""  # the file written ("" when none was)

    @property
    def exit_code(self) -> int:
        """The CLI's: 0 every tool ran (and compiled in time), 1 otherwise."""
        return 1 if self.timed_out or any(row.error for row in self.rows) else 0

    def as_dict(self) -> dict[str, Any]:
        return {"tools": [row.as_dict() for row in self.rows], "seconds": round(self.seconds, 3),
                "compile_ahead": self.compile_ahead, "timed_out": self.timed_out, "inductor_cache": self.inductor_cache,
                "note": self.note, "compiled_loaded": self.compiled_loaded, "compiled_saved": self.compiled_saved,
                "compiled_file": self.compiled_file}  # fmt: skip


def warm_up(
    orchestrator: Orchestrator,
    tools: Sequence[str] | None = None,
    timeout: float = 900.0,
    report: Callable[[str], None] | None = None,
    compiler: Any = None,
) -> WarmupReport:
    """Call every tool of the orchestrator (or only ``tools``) as described in the module docstring.

    ``report`` receives a line per step (the CLI prints them); ``compiler`` is the background compiler to wait
    for (default: the orchestrator's, ``orchestrator.fastpath.compiler``). Tool failures end up in the rows;
    an unknown tool name raises SpecError.
    """
    say = report or (lambda line: None)
    selected = select_tools(orchestrator, tools)
    started = time.perf_counter()
    out = WarmupReport([Row(t.name, t.card, orchestrator.plan.device_of(t.card)) for t in selected])
    out.timeout = timeout
    on_cuda = any(row.device.startswith("cuda") for row in out.rows)
    fast = _fast_path_on(orchestrator, [t.card for t in selected])
    out.compile_ahead = on_cuda and fast
    out.note = _note(on_cuda, fast)
    out.inductor_cache = _inductor_cache(orchestrator, prepare=out.compile_ahead)
    if out.compile_ahead:
        out.compiled_loaded = _load_compiled(orchestrator, out.rows, say)
    with tempfile.TemporaryDirectory(prefix="visual-orchestrator-warmup-") as folder:
        session = orchestrator.new_session(folder)
        drawing = synthetic_picture()
        picture = session.upload(drawing, "warmup.png")
        edges = session.upload(edge_map(drawing), "warmup-edges.png")
        size = session.images.open(picture).size
        family = orchestrator.manager.family_of
        samples = {t.name: sample_args(t, picture, size, edges, family(t.card).warmup.condition_map)
                   for t in selected}  # fmt: skip
        # First call: load + eager; the second captures graphs and queues the compile (one call without it).
        _call_all(session, selected, samples, out.rows, calls=2 if fast else 1, first=True, say=say)
        if out.compile_ahead:
            out.timed_out = not _compile_everything(session, selected, samples, out.rows,
                                                    compiler or orchestrator.fastpath.compiler, started + timeout,
                                                    say)  # fmt: skip
            if out.timed_out:
                out.note = (f"The background compile did not finish within {timeout:g} s; what it compiled so "
                            "far is cached: run warmup again or give it a longer --timeout.")  # fmt: skip
            else:  # every graph is of the compiled forward now: this call is what a served request gets
                _call_all(session, selected, samples, out.rows, calls=1, first=False, say=say)
    statuses = {s.card: s for s in orchestrator.manager.status()}
    for row in out.rows:
        status = statuses.get(row.card)
        row.fast_fallback = status.fast_fallback if status else None
        row.compile_state = status.compile_state if status else None
    if out.compile_ahead:  # what was compiled so far, timed out or not: the next start loads it
        saved = orchestrator.fastpath.save_compiled(_first_cuda(out.rows))
        if saved is not None:
            out.compiled_saved, out.compiled_file = saved.message, saved.path if saved.done else ""
            say(saved.message)
    out.seconds = time.perf_counter() - started
    return out


def warm_up_in_background(orchestrator: Orchestrator, timeout: float = 900.0) -> threading.Thread:
    """``warm_up`` on a daemon thread, for a server that is already answering (``gradio_app.py --warmup``): the
    first users find the models loaded and, on CUDA, compiled; calls made meanwhile are served as usual. Progress
    and the outcome go to the log."""

    def run() -> None:
        try:
            report = warm_up(orchestrator, timeout=timeout, report=lambda line: log.info("warm-up: %s", line))
        except Exception:  # a bug: the server goes on without the warm-up
            log.exception("warm-up failed")
            return
        for row in report.rows:
            if row.error:
                log.warning("warm-up: %s failed: %s", row.tool, row.error)
        ready = sum(1 for row in report.rows if not row.error)
        log.info("warm-up finished in %.1f s: %d of %d tools ready. %s", report.seconds, ready, len(report.rows),
                 report.note)  # fmt: skip

    thread = threading.Thread(target=run, name="visual-orchestrator-warmup", daemon=True)
    thread.start()
    return thread


def select_tools(orchestrator: Orchestrator, names: Sequence[str] | None) -> list[Tool]:
    """The tools to warm up, in the orchestrator's order; a name not among them is a SpecError."""
    available = orchestrator.tools
    if not names:
        return list(available.values())
    unknown = [name for name in names if name not in available]
    if unknown:
        raise SpecError(f"--tools: no tool named '{unknown[0]}' among the --load cards' tools; "
                        f"available: {', '.join(available) or 'none'}.")  # fmt: skip
    return [tool for name, tool in available.items() if name in names]


def sample_args(
    tool: Tool, image: str, size: tuple[int, int], edges: str | None = None, condition_map: bool = False
) -> dict[str, Any]:
    """Arguments for one call: images are ``image``, except a mask and, for a family whose warm-up asks for a
    ``condition_map`` (the ControlNets refuse a colour picture), its images, which are ``edges`` (a grey map);
    required text and numbers get sample values, optional ones keep their defaults."""
    args: dict[str, Any] = {}
    for param in tool.params:
        if param.kind == "image":
            wants_map = edges is not None and (param.name == "mask" or condition_map)
            args[param.name] = edges if wants_map else image
        elif not param.required:
            continue
        elif param.kind == "enum":
            args[param.name] = param.choices[0]
        elif param.kind is str:
            args[param.name] = SAMPLE_TEXT.get(param.name, DEFAULT_TEXT)
        elif param.name in ("width", "height"):  # outpainting: a larger canvas, one step
            args[param.name] = size[param.name == "height"] + OUTPAINT_MARGIN
        elif param.kind is bool:
            args[param.name] = False
        else:
            args[param.name] = param.kind(1)
    return args


def synthetic_picture(side: int = PICTURE_SIDE) -> Image.Image:
    """A drawn landscape (sky, ground, house, tree, sun, a figure): edges, shapes and regions for every
    detector and editor to find something in."""
    rows = np.linspace(0.0, 1.0, side)[:, None, None]
    sky = (1 - rows) * np.array([90, 150, 230]) + rows * np.array([200, 225, 250])
    pixels = np.broadcast_to(sky, (side, side, 3)).astype(np.uint8).copy()
    horizon = side * 5 // 8
    pixels[horizon:] = np.array([70, 150, 60], dtype=np.uint8)
    stripes = (np.arange(side - horizon) // 12 % 2 == 0)[:, None]
    pixels[horizon:][np.broadcast_to(stripes, (side - horizon, side))] = (60, 135, 50)
    picture = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(picture)
    s = side / 512  # the drawing is laid out for 512 px

    def box(*xy: float) -> list[int]:
        return [round(v * s) for v in xy]

    draw.ellipse(box(400, 40, 470, 110), fill=(250, 210, 60))  # sun
    draw.rectangle(box(120, 220, 300, 360), fill=(200, 70, 60), outline=(60, 30, 20), width=3)  # house
    draw.polygon(box(100, 225, 210, 140, 320, 225), fill=(110, 60, 40), outline=(40, 20, 10))  # roof
    draw.rectangle(box(190, 290, 230, 360), fill=(90, 50, 30))  # door
    for left in (140, 250):
        draw.rectangle(box(left, 245, left + 35, 280), fill=(170, 210, 240), outline=(255, 255, 255), width=3)
    draw.rectangle(box(380, 250, 400, 370), fill=(100, 70, 40))  # tree trunk
    draw.ellipse(box(335, 160, 445, 270), fill=(40, 120, 40), outline=(20, 70, 20), width=2)  # crown
    draw.ellipse(box(55, 300, 85, 330), fill=(240, 200, 170))  # a figure: head, body, arms, legs
    draw.line(box(70, 330, 70, 390), fill=(30, 30, 120), width=round(8 * s))
    draw.line(box(45, 345, 95, 345), fill=(30, 30, 120), width=round(6 * s))
    draw.line(box(70, 390, 55, 440) + box(70, 390, 85, 440), fill=(40, 40, 40), width=round(6 * s))
    return picture


def edge_map(picture: Image.Image) -> Image.Image:
    """The picture's outlines, white on black, grey (what image2canny makes, near enough)."""
    edges = picture.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 24 else 0)
    return edges.convert("RGB")


def _fast_path_on(orchestrator: Orchestrator, cards: list[str]) -> bool:
    """The fast path and its compiler are on for these cards (options, --no-fast/--no-compile, environment)."""
    fastpath = orchestrator.fastpath
    options = [orchestrator.card_options(card) for card in cards]
    return all(fastpath.fast_for(o) and fastpath.compile_for(o) for o in options)


def _note(on_cuda: bool, fast: bool) -> str:
    if not on_cuda:
        return ("No card is on CUDA and nothing compiles off CUDA: each tool was loaded and called, which "
                "checks its checkpoints.")  # fmt: skip
    if not fast:
        return ("The fast path or its compiler is off (--no-fast, --no-compile or the environment), so there is "
                "nothing to compile ahead: each tool was loaded and called once, which checks its checkpoints.")  # fmt: skip
    return "Compiled ahead: a server started on this cache finds the compiled code on disk (see the folder below)."


def _inductor_cache(orchestrator: Orchestrator, prepare: bool) -> str:
    """Where inductor keeps its compiled code (with ``prepare``, also point it there before anything compiles)."""
    if prepare:
        orchestrator.fastpath.use_inductor_cache()
    return str(orchestrator.fastpath.cache_dir)


def _first_cuda(rows: list[Row]) -> str | None:
    """The first CUDA device the tools run on: the GPU model the compiled-code file is for."""
    return next((row.device for row in rows if row.device.startswith("cuda")), None)


def _load_compiled(orchestrator: Orchestrator, rows: list[Row], say: Callable[[str], None]) -> str:
    """Load the compiled-code file before anything compiles, as a server would; what it did, in one sentence."""
    loaded = orchestrator.fastpath.load_compiled(_first_cuda(rows))
    if loaded is None or not loaded.message:
        return ""
    say(loaded.message)
    return loaded.message


def _call_all(session: Session, tools: list[Tool], samples: dict[str, dict[str, Any]], rows: list[Row],
              calls: int, first: bool, say: Callable[[str], None]) -> None:  # fmt: skip
    for tool, row in zip(tools, rows):
        if row.error:
            continue
        if session.orchestrator.manager.family_of(tool.card).warmup.network:
            if first:
                _load_only(session, tool, row, say)
            continue
        for index in range(1, calls + 1):
            label = f"call {index}/{calls}" if first else "again"
            say(f"{tool.name} ({tool.card} on {row.device}): {label}")
            call = session.call_tool(tool.name, samples[tool.name], report=_loading(say))
            if call.error:
                row.error = call.error
                say(f"{tool.name}: failed after {call.seconds:.1f} s")  # the error itself is in the row
                break
            if first and index == 1:
                row.first_seconds = call.seconds
            if not first or index > 1:
                row.ready_seconds = call.seconds
            say(f"{tool.name}: {call.seconds:.2f} s")


def _load_only(session: Session, tool: Tool, row: Row, say: Callable[[str], None]) -> None:
    """A tool that reaches the network is not called ahead of serving: its card is loaded (its client configured),
    which checks the configuration; the row keeps no ready time."""
    started = time.perf_counter()
    try:
        with session.orchestrator.manager.use(tool.card):
            pass
    except Exception as exc:  # a configuration that cannot work: reported in the row, the others go on
        row.error = f"{tool.card} could not be loaded: {exc}"
    row.first_seconds = time.perf_counter() - started
    say(f"{tool.name}: {'failed' if row.error else 'loaded; not called, since it reaches the network'}")


def _loading(say: Callable[[str], None]) -> Callable[[Progress], None]:
    """A tool's progress as lines: only messages without a step count ('loading Text2Image on cuda:0')."""

    def report(progress: Progress) -> None:
        if progress.step is None:
            say(f"  {progress.message}")

    return report


def _compile_everything(session: Session, tools: list[Tool], samples: dict[str, dict[str, Any]], rows: list[Row],
                        compiler: Any, deadline: float, say: Callable[[str], None]) -> bool:  # fmt: skip
    """Wait for the compiler, call every tool again, and repeat while those calls queue more compiles: a call
    captures graphs of what was compiled, and a tool whose graph capture was put off (the compiler was busy)
    queues its compile only on a later call. False when ``deadline`` passes first."""
    for _ in range(MAX_ROUNDS):
        if compiler.busy():
            say(
                f"waiting for the background compile to finish (up to {deadline - time.perf_counter():.0f} s)"
            )
        started = time.perf_counter()
        if not compiler.wait(max(0.0, deadline - started)):
            return False
        say(f"compiled in {time.perf_counter() - started:.1f} s")
        queued = compiler.jobs_submitted
        _call_all(session, tools, samples, rows, calls=1, first=False, say=say)
        # under a budget a compile may wait for the helper's room; the first call after that queues it again
        waiting = compiler.waiting_for_room()
        if compiler.jobs_submitted == queued and not compiler.busy() and not waiting:
            return True
        if waiting and not compiler.busy():
            say(f"a compile waits for room in the VRAM budget; calling again in {waiting:.0f} s")
            time.sleep(min(waiting, max(0.0, deadline - time.perf_counter())))
    say(f"still compiling after {MAX_ROUNDS} rounds; the last calls may not be at full speed")
    return compiler.wait(max(0.0, deadline - time.perf_counter()))
