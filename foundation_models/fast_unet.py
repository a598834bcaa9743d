"""Fast diffusion steps: CUDA-graph replay of the UNet, ControlNet, VAE decoder and text encoder, then of their
compiled forward.

SD1.5 at 512² on a large GPU is bound by kernel launches, not arithmetic: the eager UNet launches about a
thousand small kernels per step and the GPU waits for the CPU (on an H200, 33 ms per guided step eager,
12 ms replayed, 6.5 ms replayed once compiled; docs/benchmarks.md). Three tiers, per input signature
(shapes, dtypes, flags such as the ControlNet scale):

1. The first call runs eager (it also warms cuDNN and cuBLAS up).
2. The second captures a CUDA graph of the eager forward (a fraction of a second, no compilation): one
   launch per step from then on. It also hands the module to a background thread that compiles it with
   ``torch.compile`` (inductor: fused, channels-last kernels; the UNet's and ControlNet's convolution weights
   are stored channels-last first, ``to_channels_last``). Calls keep replaying the eager graph meanwhile.
3. Once compiled, the next call captures a graph of the compiled forward and the rest replay it.

What gets compiled is diffusers' repeated blocks (``REGIONS``), one compiled function per block class and
input signature, shared by every module: the ControlNet and the inpainting UNet find their blocks compiled by
Text2Image (ready in about 2 s instead of 1.5 minutes). The glue between blocks runs eagerly inside the same
graph. A cold Text2Image compile (UNet and VAE decoder) takes about a minute; inductor's on-disk cache, kept
under ``$VISUAL_ORCHESTRATOR_CACHE/inductor``, brings that to 14-28 s after a restart.

On CUDA each compile job runs first in a helper process (compile_helper.py) that fills inductor's on-disk
cache, so the compile in this process only traces and loads: compiling here beside serving calls stalled them
for seconds at a time (they share one CUDA context).

The text encoder gets graphs of its eager forward only (short, launch-bound). The scheduler keeps its sigma
table on the GPU and steps without host syncs (fast_scheduler.py), so the CPU stays ahead of the GPU; images
agree with eager ones within 0.004 (pixels in 0-1, measured on the H200).

So nothing blocks start-up or a call, and the eager path answers every call until a graph exists,
whenever capture or compilation fails (logged once), off CUDA, and with gradients on. Modules that gain
nothing from tier 2 (the VAE decoder: one big call per image) skip it and wait for tier 3.

Turn it all off with ``fast: false`` in a card's options (``Orchestrator(fast=False)``, ``--no-fast``) or
``VISUAL_ORCHESTRATOR_FAST=0``; keep the graphs but not the compiler with ``compile: false``
(``--no-compile``, ``VISUAL_ORCHESTRATOR_COMPILE=0``). Graphs read the weights at fixed addresses: moving a
module (offloading under a VRAM budget) must drop them (``release``), and a changed weight address drops
them as well; the compiled forward survives a round trip to the CPU and back.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .compile_helper import CompileHelper, helper_enabled, helper_need_mb, set_owner
from .fast_scheduler import scheduler_on_device

log = logging.getLogger(__name__)

ENV_FLAG = "VISUAL_ORCHESTRATOR_FAST"
COMPILE_FLAG = "VISUAL_ORCHESTRATOR_COMPILE"
MAX_GRAPHS = 8  # signatures per module; more than that (a varying size every call) stay eager
_RUNNER = "_visual_orchestrator_graphs"
_MISSING = object()


def reason(exc: BaseException) -> str:
    """An exception in one line for a log: its first line that says something (dynamo's says only which
    backend raised, and the cause follows on the next line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [
        line for line in lines if not (line.startswith("backend=") and line.endswith("raised:"))
    ] or lines
    return lines[0] if lines else type(exc).__name__


def _env_on(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def fast_enabled(flag: bool | None = None) -> bool:
    """The card's ``fast`` option when it is set, else the environment (on unless VISUAL_ORCHESTRATOR_FAST=0)."""
    return bool(flag) if flag is not None else _env_on(ENV_FLAG)


def compile_enabled(flag: bool | None = None) -> bool:
    """The card's ``compile`` option when set, else the environment (on unless VISUAL_ORCHESTRATOR_COMPILE=0)."""
    return bool(flag) if flag is not None else _env_on(COMPILE_FLAG)


@contextmanager
def fast_pipeline(pipe: Any, enabled: bool = True, compile: bool = True) -> Iterator[None]:
    """Within the block, the pipeline's UNet, ControlNet and VAE decoder replay CUDA graphs where they can."""
    compiler = background_compiler() if compile else None
    vae = getattr(pipe, "vae", None)
    for decoder in decoders(pipe):  # built again from its VAE's config by the compile helper
        set_owner(decoder, vae, "decoder")
    with (
        graphed(denoisers(pipe), enabled, compiler, channels_last=CHANNELS_LAST and compiler is not None),
        graphed(decoders(pipe), enabled, compiler, eager_graphs=False),
        graphed(encoders(pipe), enabled),
        scheduler_on_device(getattr(pipe, "scheduler", None), enabled),
    ):
        yield


def denoisers(pipe: Any) -> list[Any]:
    """The modules of a diffusers pipeline that run once per step: its UNet and ControlNet."""
    return [m for m in (getattr(pipe, "unet", None), getattr(pipe, "controlnet", None)) if m is not None]


def encoders(pipe: Any) -> list[Any]:
    """The text encoder: one short call per prompt, launch-bound (a graph of its eager forward is enough)."""
    encoder = getattr(pipe, "text_encoder", None)
    return [encoder] if encoder is not None else []


def decoders(pipe: Any) -> list[Any]:
    """The VAE's decoder: once per image, worth compiling, not worth a graph of its eager forward."""
    decoder = getattr(getattr(pipe, "vae", None), "decoder", None)
    return [decoder] if decoder is not None else []


def fast_modules(pipe: Any) -> list[Any]:
    """Every module whose graphs ``fast_pipeline`` may hold (what ``release`` takes before a move)."""
    return denoisers(pipe) + decoders(pipe) + encoders(pipe)


@contextmanager
def graphed(
    modules: Iterable[Any], enabled: bool = True, compiler: BackgroundCompiler | None = None,
    eager_graphs: bool = True, channels_last: bool = False,
) -> Iterator[None]:  # fmt: skip
    """Within the block, calls to these modules (``torch.nn.Module``) replay CUDA graphs where they can;
    with a ``compiler``, graphs of their compiled forward once it is ready; with ``channels_last``, their
    convolution weights in NHWC order first (``to_channels_last``)."""
    patched = []
    for module in modules if enabled else ():
        if _is_module(module) and "forward" not in module.__dict__:
            runner = runner_for(module)
            if channels_last:
                to_channels_last(module, runner.backend)
            runner.compiler, runner.eager_graphs = compiler, eager_graphs
            module.forward = runner  # an instance attribute shadows the class's forward
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            module.__dict__.pop("forward", None)


def to_channels_last(module: Any, backend: Any) -> bool:
    """Store the module's convolution weights in channels-last (NHWC) order, once, where its graphs run (the
    backend accepts the weights: CUDA). Inductor then keeps the convolutions in cuDNN's NHWC layout instead of
    transposing around each one. The weights' new addresses drop any graph captured before; offloading keeps the
    order. Images change within rounding."""
    import torch

    kernel = next((p for p in module.parameters() if p.dim() == 4 and p.shape[2] * p.shape[3] > 1), None)
    if (
        kernel is None
        or not backend.accepts(kernel.detach())
        or kernel.is_contiguous(memory_format=torch.channels_last)
    ):
        return False
    module.to(memory_format=torch.channels_last)
    return True


def release(modules: Iterable[Any]) -> None:
    """Drop the graphs of these modules (before they move: graphs hold their device addresses)."""
    for module in modules:
        runner = getattr(module, "__dict__", {}).get(_RUNNER)
        if runner is not None:
            runner.clear()


def runner_for(module: Any, backend: Any = None) -> GraphedForward:
    """The module's graph cache, made on first use and kept on the module (so it dies with it)."""
    runner = module.__dict__.get(_RUNNER)
    if runner is None:
        runner = GraphedForward(module, backend)
        object.__setattr__(module, _RUNNER, runner)
    return runner


def _is_module(obj: Any) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)


class WeightWatch:
    """Notices a module's weights moving (``.to(device)``, offloading, a layout change): graphs read weights at
    fixed addresses, so their owner drops them when ``moved()``. A few weights stand for all of them."""

    def __init__(self, module: Any):
        params = list(module.parameters())
        self.anchors = params[:: max(1, len(params) // 8)] + params[-1:]
        self.addresses: tuple | None = None

    def where(self) -> tuple:
        return tuple((p.device, p.data_ptr()) for p in self.anchors)

    def moved(self) -> bool:
        """Whether they moved since the last call (True on the first)."""
        addresses = self.where()
        moved, self.addresses = addresses != self.addresses, addresses
        return moved


class GraphedForward:
    """One module's forward: eager, or the replay of the graph captured for these inputs' signature."""

    def __init__(self, module: Any, backend: Any = None, max_graphs: int = MAX_GRAPHS):
        self.eager: Callable[..., Any] = type(module).forward.__get__(module)
        self.backend = backend or CudaGraphs()
        self.max_graphs = max_graphs
        self.graphs: dict[Any, Any] = {}  # signature -> captured graph, or None where capture failed
        self.kinds: dict[Any, str] = {}  # signature -> "eager" or "compiled": which forward its graph holds
        self.seen: set[Any] = set()
        self._weights = WeightWatch(module)
        # Tier 3 (set by ``graphed``): the compiled forward, and the signatures it is warm for.
        self.compiler: BackgroundCompiler | None = None
        self.eager_graphs = True  # False: no graph of the eager forward, only of the compiled one
        self.compiled: Callable[..., Any] | None = None
        self.compiled_keys: set[Any] = set()
        self.submitted: set[Any] = set()
        self.compile_failed = False
        self.put_off = 0  # compiles that ran out of memory and wait for a next call
        self.retry_at = 0.0  # time.monotonic() before which no compile is queued (awaiting the helper's room)

    @property
    def name(self) -> str:
        return type(self.eager.__self__).__name__

    def clear(self) -> None:
        """Drop the graphs (the compiled forward stays: it reads the weights wherever they are)."""
        self.graphs.clear()
        self.kinds.clear()
        self.seen.clear()
        self.backend.reset()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        signature = self._signature(args, kwargs)
        if signature is None:
            return self.eager(*args, **kwargs)
        key, leaves, spec = signature
        if self._weights.moved():
            self.clear()
        graph = self.graphs.get(key, _MISSING)
        upgrade = key in self.compiled_keys and self.kinds.get(key) != "compiled"
        if graph is not _MISSING and not upgrade:
            if graph is None:
                return self.eager(*args, **kwargs)
            if self.kinds.get(key) == "eager":  # a graph made before a compiler was given: compile now
                self._submit(key, leaves, spec)
            return self.backend.replay(graph, leaves)
        if key not in self.seen or (key not in self.graphs and len(self.graphs) >= self.max_graphs):
            self.seen.add(key)
            if not self.eager_graphs:
                self._submit(key, leaves, spec)
            return self.eager(*args, **kwargs)
        if not upgrade and not self.eager_graphs:
            return self.eager(*args, **kwargs)
        return self._capture(key, leaves, spec, upgrade, graph, args, kwargs)

    def _capture(self, key: Any, leaves: list[Any], spec: Any, upgrade: bool, graph: Any, args: tuple,
                 kwargs: dict) -> Any:  # fmt: skip
        """Capture a graph of the compiled forward (``upgrade``) or of the eager one, unless the background
        compiler is working right now: capturing beside it is unsafe, so this call makes do without. That holds
        for a module that is not compiled itself (the text encoder) too: the compiler may be working for another
        one (on the H200 such a capture beside a UNet compile broke both, the compile for good)."""
        compiler = self.compiler or running_compiler()
        lock = compiler.lock if compiler is not None else None
        if lock is not None and not lock.acquire(blocking=False):
            return (
                self.eager(*args, **kwargs)
                if graph is None or graph is _MISSING
                else self.backend.replay(graph, leaves)
            )
        try:
            forward = self.compiled if upgrade and self.compiled is not None else self.eager
            try:
                captured, result = self.backend.capture(forward, leaves, spec)
            except Exception as exc:  # a module that cannot be captured still runs, eagerly
                # a full GPU or budget (--max-vram caps torch's allocator): the next call tries again
                if is_out_of_memory(exc):
                    log.info("no memory to capture a graph of %s now; this call runs without", self.name)
                    return self.eager(*args, **kwargs) if graph is None or graph is _MISSING else self.backend.replay(
                        graph, leaves)  # fmt: skip
                log.warning("CUDA graph capture of %s failed; it runs eagerly: %s", self.name, reason(exc))
                if upgrade:  # keep the eager graph, never try the compiled one again
                    self.compiled_keys.discard(key)
                    return self.eager(*args, **kwargs) if graph is None or graph is _MISSING else self.backend.replay(
                        graph, leaves)  # fmt: skip
                self.graphs[key] = None
                return self.eager(*args, **kwargs)
            self.graphs[key] = captured
            self.kinds[key] = "compiled" if forward is not self.eager else "eager"
        finally:
            if lock is not None:
                lock.release()
        if self.kinds[key] == "eager":
            self._submit(key, leaves, spec)
        return result

    def _submit(self, key: Any, leaves: list[Any], spec: Any) -> None:
        waiting = time.monotonic() < self.retry_at
        if self.compiler is None or self.compile_failed or key in self.submitted or waiting:
            return
        self.submitted.add(key)
        self.compiler.submit(self, key, leaves, spec)

    def compile_for(self, key: Any, leaves: list[Any], spec: Any, compiler: BackgroundCompiler) -> None:
        """Compile the forward and run it once on these inputs (in the compiler's thread); on success the
        next call with this signature captures a graph of it."""
        from torch.utils._pytree import tree_unflatten

        if self.compiled is None:
            self.compiled = compiler.compiled_forward(self.eager)
        args, kwargs = tree_unflatten(leaves, spec)
        self.compiled(*args, **kwargs)
        self.compiled_keys.add(key)

    def _signature(self, args: tuple, kwargs: dict) -> tuple[Any, list[Any], Any] | None:
        """(key, leaves, spec), or None when this call must run eagerly."""
        import torch
        from torch.utils._pytree import tree_flatten

        if torch.is_grad_enabled() or not self.backend.ready():
            return None
        leaves, spec = tree_flatten((args, kwargs))
        key: list[Any] = [spec]
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                if not self.backend.accepts(leaf):
                    return None
                key.append((tuple(leaf.shape), leaf.dtype, leaf.device))
            else:
                try:
                    hash(leaf)
                except TypeError:
                    return None
                key.append((type(leaf), leaf))
        return tuple(key), leaves, spec


# diffusers' repeated blocks: the UNet's, the ControlNet's and the VAE's resnets and transformer blocks. Compiled one
# by one (each class and input signature once), a second module finds its blocks compiled: on the H200 a ControlNet
# after Text2Image is ready in 1.7 s instead of 94 s, and the UNet's own cold compile went from 64 to 53 s at
# 7.4 instead of 7.0 ms per step (docs/benchmarks.md). The glue between blocks runs eagerly, in the same CUDA graph.
REGIONS = ("ResnetBlock2D", "Transformer2DModel")
# Torch state that is process-wide, not per thread: transformers sets the default dtype while it builds a model
# (``from_pretrained(dtype=...)``), and dynamo saves it (with the RNG states) before it traces and restores it after,
# then fails the compile if it changed meanwhile. A model loading on one thread while the compiler traces on another
# came out half float32 ("expected scalar type Half but found Float", seen on the H200), or the compile failed, or
# the default dtype stayed float16. So tracing (each compiled region call) and model building take turns.
GLOBAL_STATE = threading.RLock()
CHANNELS_LAST = True  # the UNet's and ControlNet's weights in NHWC once compiling: 6.5 vs 7.4 ms a UNet step
# Inductor times several launch configurations of each new pointwise kernel on the GPU; without that, a cold
# Text2Image compile beside a serving loop took 85 s instead of 104-120 s, and the compiled call 0.161 s
# (0.162-0.166 s with it) on the H200 (benchmarks/results/2026-11-29-h200-serving.txt).
AUTOTUNE_POINTWISE = False
MAX_PUT_OFF = 3  # compiles out of memory before the module keeps its uncompiled fast path
RETRY_HELPER_S = 10.0  # a compile put off for the helper's room is queued again by a call this much later
DYNAMIC_REGIONS = False  # measured: symbolic sizes cost the conv layout (10.6 vs 7.4 ms) and compile longer
_REGIONS = threading.local()  # .on: this thread calls the compiled regions (the compiled forward is running)


class BackgroundCompiler:
    """One worker thread that compiles modules' forwards, one job at a time, while calls go on.

    A job holds ``lock`` while it compiles; the callers never capture a graph while it is held (capture and
    another thread's compilation on one GPU do not mix) and never call a compiled forward for a signature
    it has not finished. ``compile_fn`` turns a function into its compiled version (default: inductor).

    What gets compiled is each of the module's ``regions`` (blocks of these classes; ``REGIONS``), one compiled
    function per class shared by every block of it, in every module: a block class and input signature is
    compiled once, and the ControlNet, inpainting and pix2pix UNets reuse what the base UNet compiled. A
    module without such blocks (or ``regions=()``) is compiled whole.

    Dynamo saves and restores the global RNG state around tracing, so a draw from the global generator on another
    thread while a job runs may repeat; the tools draw from their own seeded generators.
    """

    def __init__(self, compile_fn: Callable[..., Callable[..., Any]] | None = None,
                 regions: tuple[str, ...] | None = None, dynamic: bool = DYNAMIC_REGIONS):  # fmt: skip
        self.compile_fn = compile_fn or inductor_compile  # compile_fn(function, dynamic=...) -> compiled
        self.regions = REGIONS if regions is None else regions
        self.dynamic = dynamic  # regions compiled for symbolic sizes: once per class, not per signature
        self._by_class: dict[type, Callable[..., Any]] = {}
        self.lock = threading.RLock()
        self._jobs: queue.Queue = queue.Queue()
        self._pending = 0
        self.jobs_submitted = 0  # ever, by every module: a caller sees whether its calls queued new compiles
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        # Inductor's jobs are compiled ahead in a helper process first (compile_helper.py); None: all in here
        self.helper: CompileHelper | None = (
            CompileHelper() if compile_fn is None and helper_enabled() else None
        )
        # Under a VRAM budget, who keeps the helper's GPU memory inside it (the model manager; see
        # ``count_compile_helper``): could_hold(device, mb) -> bool, whether it ever fits; hold_outside(device, mb,
        # let_go) -> bool evicts models for it or says not now; release_outside(device) gives it back.
        self.room: Any = None
        self._held: dict[str, int] = {}  # device -> MB held for the helper now
        self._later = False  # the job at hand waits for the helper's room (not compiled here meanwhile)
        self._retry_until = 0.0  # when (time.monotonic()) the last job put off for room may be queued

    def submit(self, runner: GraphedForward, key: Any, leaves: list[Any], spec: Any) -> None:
        """Queue a compile of ``runner``'s module for this signature, on copies of these inputs."""
        import torch

        example = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]
        ready = None
        if any(isinstance(x, torch.Tensor) and x.is_cuda for x in example):
            ready = torch.cuda.Event()
            ready.record()  # the copies are made on this thread's stream; the worker waits for them
        with self._idle:
            self._pending += 1
            self.jobs_submitted += 1
        self._jobs.put((runner, key, example, spec, ready, torch.is_inference_mode_enabled()))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._work, name="visual-orchestrator-compile", daemon=True
            )
            self._thread.start()

    def compiled_forward(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        """``forward`` (a module's bound forward) with its regions compiled, or compiled whole."""
        raise_recompile_limit()
        blocks = outermost(forward.__self__, self.regions) if self.regions else []
        if not blocks:
            return _holding(GLOBAL_STATE, self.compile_fn(forward, dynamic=False))
        for block in blocks:
            cls = type(block)
            if cls not in self._by_class:
                self._by_class[cls] = self.compile_fn(cls.forward, dynamic=self.dynamic)
            if "forward" not in block.__dict__:
                block.forward = RegionForward(block, self._by_class[cls])

        def with_compiled_regions(*args: Any, **kwargs: Any) -> Any:
            previous = getattr(_REGIONS, "on", False)
            _REGIONS.on = True
            try:
                return forward(*args, **kwargs)
            finally:
                _REGIONS.on = previous

        return with_compiled_regions

    def busy(self) -> bool:
        return self._pending > 0

    def waiting_for_room(self) -> float:
        """Seconds until a compile put off for the helper's room (under a budget) may be queued again by a
        call; 0 when none waits."""
        return max(0.0, self._retry_until - time.monotonic())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued job is done (benchmarks and tests); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()  # a daemon thread: it waits for work for as long as the process lives
            try:
                try:
                    later = self._ahead(*job)  # not holding the lock: graphs are captured here meanwhile
                except Exception as exc:  # the compile here goes on without the helper's head start
                    log.warning("compile helper failed: %s", reason(exc))
                    later = False
                if later:  # a budget with no room for the helper now: a later call queues it again
                    runner, key = job[0], job[1]
                    runner.submitted.discard(key)
                    runner.retry_at = time.monotonic() + RETRY_HELPER_S
                    self._retry_until = max(self._retry_until, runner.retry_at)
                else:
                    with self.lock:
                        self._run(*job)
            finally:
                if self.helper is not None and self._jobs.empty():
                    self.helper.close()  # its CUDA context and module copy leave the GPU; the next job restarts it
                    self._release_held()
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _ahead(self, runner: GraphedForward, key: Any, example: list[Any], spec: Any, ready: Any,
               inference: bool) -> bool:  # fmt: skip
        """Have the helper process compile a CUDA job first, so that the compile here finds it in the caches.
        True: put the job off instead (a budget has no room for the helper just now, or took it back).

        Compiling here instead would hold the compiler's lock for a minute, and a model swapped in meanwhile
        could not capture graphs: on the H200 under 8 GiB such calls took 5-16 s instead of 0.6 s."""
        import torch

        device = next((x.device for x in example if isinstance(x, torch.Tensor) and x.is_cuda), None)
        if self.helper is None or device is None or any(d != device for d, _ in runner._weights.where()):
            return False
        with self.lock, torch.cuda.device(device):  # GPU work here: no capture meanwhile (see _capture)
            stream = torch.cuda.Stream(device)
            if ready is not None:
                stream.wait_event(ready)
            with torch.cuda.stream(stream):
                if self._known_here(runner, example, spec, inference):
                    return False
        module = runner.eager.__self__
        self._later = False
        done = self.helper.prepare(module, example, spec, inference, self.regions, self.dynamic,
                                   room=lambda: self._hold(str(device), module))  # fmt: skip
        return not done and self._later

    def _hold(self, device: str, module: Any) -> bool:
        """Room on the device for the helper to compile ``module`` (always, without a budget)."""
        if self.room is None:
            return True
        need = helper_need_mb(module)
        if self._held.get(device, 0) >= need:
            return True
        helper = self.helper

        def let_go() -> None:  # the manager wants the memory back for a call: the job waits for a later one
            self._held.pop(device, None)
            self._later = True
            if helper is not None:
                helper.let_go()

        if not self.room.could_hold(device, need):
            log.info("%s's budget cannot hold the compile helper (%d MB) beside its largest call; compiling %s "
                     "here", device, need, type(module).__name__)  # fmt: skip
            return False
        if not self.room.hold_outside(device, need, let_go):
            log.info("no room in %s's budget for the compile helper (%d MB) now; %s's compile waits for a later "
                     "call", device, need, type(module).__name__)  # fmt: skip
            self._later = True
            return False
        self._held[device] = need
        return True

    def _release_held(self) -> None:
        for device in list(self._held):
            self._held.pop(device, None)
            if self.room is not None:
                self.room.release_outside(device)

    def _known_here(self, runner: GraphedForward, example: list[Any], spec: Any, inference: bool) -> bool:
        """``compiled_here``, or False when its eager call finds no memory (a full budget): the helper then
        compiles the job, needed or not."""
        try:
            return self.compiled_here(runner, example, spec, inference)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            log.info("no memory to check what %s needs compiled; the helper compiles it", runner.name)
            return False

    def compiled_here(self, runner: GraphedForward, example: list[Any], spec: Any, inference: bool) -> bool:
        """Whether every region of this job is compiled in this process already (one eager call tells)."""
        import torch
        from torch.utils._pytree import tree_unflatten

        blocks = outermost(runner.eager.__self__, self.regions) if self.regions else []
        if not blocks:
            return False
        seen: set[Any] = set()
        me = threading.get_ident()

        def note(block: Any, args: tuple, kwargs: dict) -> None:
            if threading.get_ident() == me:  # not a serving thread's call meanwhile
                seen.add((type(block), region_signature(args, kwargs)))

        hooks = [block.register_forward_pre_hook(note, with_kwargs=True) for block in blocks]
        try:
            args, kwargs = tree_unflatten(example, spec)
            with torch.inference_mode() if inference else torch.no_grad():
                runner.eager(*args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        return seen <= _COMPILED_HERE

    def _run(self, runner: GraphedForward, key: Any, example: list[Any], spec: Any, ready: Any,
             inference: bool) -> None:  # fmt: skip
        import torch

        started = time.perf_counter()
        device = next((x.device for x in example if isinstance(x, torch.Tensor) and x.is_cuda), None)
        mode = torch.inference_mode() if inference else torch.no_grad()  # the callers' mode: no recompile
        weights = runner._weights.where()
        if device is not None and any(d != device for d, _ in weights):  # offloaded since it was queued
            runner.submitted.discard(key)  # its next call on the GPU queues it again
            return
        try:
            if device is None:
                with mode:
                    runner.compile_for(key, example, spec, self)
            else:
                with torch.cuda.device(device), mode:
                    stream = torch.cuda.Stream(device)
                    if ready is not None:
                        stream.wait_event(ready)
                    with torch.cuda.stream(stream):
                        runner.compile_for(key, example, spec, self)
                    stream.synchronize()
        except Exception as exc:  # the graphs of the eager forward keep serving
            if runner._weights.where() != weights:
                # Offloaded while it compiled (budget mode): not the compiler's fault. What compiled is in the
                # caches; the module's next call on the GPU queues the rest again.
                runner.submitted.discard(key)
                log.info("compile of %s put off: its weights moved meanwhile (%s)", runner.name, reason(exc))
                return
            if is_out_of_memory(exc) and runner.put_off < MAX_PUT_OFF:  # a budget full of models just then
                runner.put_off += 1
                runner.submitted.discard(key)
                log.info("compile of %s put off: out of memory (%s)", runner.name, reason(exc))
                return
            exiting = not threading.main_thread().is_alive()  # inductor's worker pool is gone at exit
            if exiting:
                log.debug("compile of %s cut short at exit: %s", runner.name, reason(exc))
                return
            runner.compile_failed = True
            log.warning(
                "torch.compile of %s failed; it keeps the uncompiled fast path: %s", runner.name, reason(exc)
            )
            log.debug("torch.compile of %s failed", runner.name, exc_info=True)
            return
        log.info("compiled %s for %s in %.1f s", runner.name, _shapes(key), time.perf_counter() - started)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether a failure was the GPU (or a VRAM budget's cap on torch's allocator) running out of memory."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _shapes(key: Any) -> str:
    return ", ".join(
        "x".join(map(str, k[0])) for k in key[1:] if isinstance(k, tuple) and isinstance(k[0], tuple)
    )


def outermost(module: Any, classes: tuple[str, ...]) -> list[Any]:
    """The submodules of these classes that are not inside another one."""
    found: list[tuple[str, Any]] = []
    for name, sub in module.named_modules():
        if type(sub).__name__ in classes and not any(name.startswith(f"{outer}.") for outer, _ in found):
            found.append((name, sub))
    return [sub for _, sub in found]


class RegionForward:
    """A block's forward: its class's compiled forward inside a compiled module forward (this thread only),
    its own eager forward everywhere else (eager calls and graphs of them, other threads)."""

    def __init__(self, block: Any, compiled: Callable[..., Any]):
        self.block, self.compiled = block, compiled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(_REGIONS, "on", False):
            with GLOBAL_STATE:  # this call may trace and compile: no model building meanwhile
                out = self.compiled(self.block, *args, **kwargs)
            _COMPILED_HERE.add((type(self.block), region_signature(args, kwargs)))
            return out
        return type(self.block).forward(self.block, *args, **kwargs)


# (block class, input signature) of every region this process has compiled: a job whose blocks are all in here
# (a ControlNet after Text2Image: the same blocks, compiled in 0.1 s on the H200) skips the compile helper.
_COMPILED_HERE: set[Any] = set()


def region_signature(args: tuple, kwargs: dict) -> Any:
    """What a compiled region is specialized on: tensor shapes, dtypes, devices and strides, and other values."""
    import torch
    from torch.utils._pytree import tree_flatten

    leaves, spec = tree_flatten((args, kwargs))
    key: list[Any] = [spec]
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            key.append((tuple(leaf.shape), leaf.dtype, leaf.device, leaf.stride()))
        else:
            try:
                hash(leaf)
                key.append((type(leaf), leaf))
            except TypeError:
                key.append(type(leaf))
    return tuple(key)


@contextmanager
def building_models() -> Iterator[None]:
    """Hold while building or loading a model: the background compiler does not trace meanwhile, and a trace
    under way finishes first (a region's compile, seconds at most). See ``GLOBAL_STATE``."""
    with GLOBAL_STATE:
        yield


def _holding(lock: Any, compiled: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return compiled(*args, **kwargs)

    return call


_COMPILER: BackgroundCompiler | None = None
_COMPILER_LOCK = threading.Lock()


def running_compiler() -> BackgroundCompiler | None:
    """The process's compiler if one was made (its lock is held while it works), else None."""
    return _COMPILER


def count_compile_helper(room: Any) -> None:
    """Have ``room`` (the model manager, under a VRAM budget) count the compile helper's GPU memory: see
    ``BackgroundCompiler.room``."""
    background_compiler().room = room


def background_compiler() -> BackgroundCompiler:
    """The process's compiler (one worker thread for every module and device)."""
    global _COMPILER
    with _COMPILER_LOCK:
        if _COMPILER is None:
            _COMPILER = BackgroundCompiler()
        return _COMPILER


def raise_recompile_limit() -> None:
    """Room for one compiled entry per block class and input signature (dynamo's default is 8: the SD1.5 UNet
    alone has 14 resnet signatures, the VAE decoder 6 more; each resolution and batch adds a set)."""
    import torch

    config = torch._dynamo.config
    for limit in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, limit):
            setattr(config, limit, max(getattr(config, limit), 32 * MAX_GRAPHS))


def inductor_cache_dir() -> str:
    from orchestrator.weights import cache_root  # the project's cache, $VISUAL_ORCHESTRATOR_CACHE

    return str(cache_root() / "inductor")


def inductor_compile(forward: Callable[..., Any], dynamic: bool = False) -> Callable[..., Any]:
    """``torch.compile`` with inductor, whole graph, static shapes; compiled code is cached on disk so a
    restart takes seconds instead of a minute."""
    import torch

    use_project_inductor_cache()
    options = {"triton.autotune_pointwise": AUTOTUNE_POINTWISE}  # inductor's settings for this function only
    return torch.compile(forward, fullgraph=True, dynamic=dynamic, options=options)


def use_project_inductor_cache() -> None:
    """Inductor's on-disk cache under the project's cache, unless the user chose a TORCHINDUCTOR_CACHE_DIR.

    Importing torch's compiler (diffusers and transformers do) writes torch's default, a folder under /tmp that
    a reboot may empty, into the environment; that value is not a choice, so it is replaced."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache_dir()


@dataclass
class Captured:
    graph: Any  # torch.cuda.CUDAGraph
    device: Any
    inputs: list[Any]  # static input tensors, None for the leaves that are not tensors
    outputs: list[Any]  # static output tensors
    out_spec: Any


class CudaGraphs:
    """Capture and replay with ``torch.cuda.CUDAGraph``; one memory pool per module, shared by its graphs.

    Graphs of one module share a pool safely because they never run at the same time: the model manager
    runs one model per device at a time.
    """

    def __init__(self) -> None:
        self.pool: Any = None
        self.stream: Any = None

    def ready(self) -> bool:
        import torch

        return torch.cuda.is_available() and not torch.cuda.is_current_stream_capturing()

    def accepts(self, tensor: Any) -> bool:
        return tensor.is_cuda and not tensor.requires_grad

    def reset(self) -> None:
        self.pool = None

    def capture(self, fn: Callable[..., Any], leaves: list[Any], spec: Any) -> tuple[Captured, Any]:
        import torch
        from torch.utils._pytree import tree_flatten, tree_unflatten

        device = next(x.device for x in leaves if isinstance(x, torch.Tensor))
        static = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]
        args, kwargs = tree_unflatten(static, spec)
        if self.stream is None or self.stream.device != device:
            self.stream = torch.cuda.Stream(device)
        current = torch.cuda.current_stream(device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            result = fn(*args, **kwargs)  # a warm-up on the capture stream, and this call's answer
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
            out = fn(*args, **kwargs)
        current.wait_stream(self.stream)
        outputs, out_spec = tree_flatten(out)
        if not outputs or not all(isinstance(o, torch.Tensor) for o in outputs):
            raise TypeError("the forward returns something other than tensors")
        self.pool = graph.pool()
        inputs = [s if isinstance(s, torch.Tensor) else None for s in static]
        return Captured(graph, device, inputs, outputs, out_spec), result

    def replay(self, captured: Captured, leaves: list[Any]) -> Any:
        import torch
        from torch.utils._pytree import tree_unflatten

        with torch.cuda.device(captured.device):
            for buffer, value in zip(captured.inputs, leaves):
                if buffer is not None and buffer.data_ptr() != value.data_ptr():
                    buffer.copy_(value)
            captured.graph.replay()
            # Clones: schedulers keep model outputs across steps, and the next replay overwrites the statics.
            return tree_unflatten([o.clone() for o in captured.outputs], captured.out_spec)
