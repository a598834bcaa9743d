"""CUDA-graph replay of a module's forward, per input signature, with the tiers that lead to it.

1. The first call with a signature runs eager (it also warms cuDNN and cuBLAS up).
2. The second captures a graph of the eager forward and replays it from then on; with a compiler it also queues
   a background compile of the forward. Modules that gain nothing from this tier (``eager_graphs=False``: the
   VAE decoder, one big call per image) skip it and wait for tier 3.
3. Once compiled, the next call captures a graph of the compiled forward and the rest replay it.

The eager path answers every call until a graph exists, whenever capture fails (logged once), off CUDA and
with gradients on. Graphs read the weights at fixed addresses: moving a module must drop them (``release``),
and a changed weight address drops them as well; the compiled forward survives a move.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .memory import is_out_of_memory, reason
from .torch_state import capture_allowed

if TYPE_CHECKING:
    from .compiler import BackgroundCompiler

log = logging.getLogger(__name__)

MAX_GRAPHS = 8  # signatures per module; more than that (a varying size every call) stay eager
_RUNNER = "_visual_orchestrator_graphs"
_MISSING = object()


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


def graph_batch(waiting: int, limit: int) -> int:
    """How many of ``waiting`` calls to run as one batch whose modules replay graphs (one set per input shape):
    ``limit``, else the largest power of two below it, so that a module holds a few graph sets (1, 2, 4, 8)
    however the calls arrive. The rest wait for the next batch, where later calls may join them: no padding
    computed for nothing."""
    n = max(1, min(waiting, limit))
    return n if n == limit else 1 << (n.bit_length() - 1)


def to_channels_last(module: Any, backend: Any) -> bool:
    """Store the module's convolution weights in channels-last (NHWC) order, once, where its graphs run (the
    backend accepts the weights: CUDA), so that inductor keeps cuDNN's NHWC layout instead of transposing around
    each convolution. The weights' new addresses drop any graph captured before; images change within rounding."""
    import torch

    kernel = next((p for p in module.parameters() if p.dim() == 4 and p.shape[2] * p.shape[3] > 1), None)
    if (
        kernel is None
        or not backend.accepts(kernel.detach())
        or kernel.is_contiguous(memory_format=torch.channels_last)
    ):
        return False
    for (
        layer
    ) in module.modules():  # the convolutions alone: --fp8's Linear weights are tensor subclasses that a
        if isinstance(layer, torch.nn.Conv2d):  # whole-module .to() cannot swap, and only 4-D weights change
            layer.to(memory_format=torch.channels_last)
    return True


def release(modules: Iterable[Any]) -> None:
    """Drop the graphs of these modules (before they move: graphs hold their device addresses)."""
    for module in modules:
        runner = getattr(module, "__dict__", {}).get(_RUNNER)
        if runner is not None:
            runner.clear()


def runner(module: Any) -> GraphedForward | None:
    """The module's graph cache if it has one (it ran on the fast path), else None."""
    return getattr(module, "__dict__", {}).get(_RUNNER)


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
        self.weights = WeightWatch(module)
        # Tier 3 (set by ``graphed``): the compiled forward, and the signatures it is warm for.
        self.compiler: BackgroundCompiler | None = None
        self.eager_graphs = True  # False: no graph of the eager forward, only of the compiled one
        self.compiled: Callable[..., Any] | None = None
        self.compiled_keys: set[Any] = set()
        self.submitted: set[Any] = set()
        self.compile_failed = False
        self.out_of_memory_compiles = 0  # compiles that ran out of memory, each retried by a later call
        self.retry_at = 0.0  # time.monotonic() before which no compile is queued (awaiting the helper's room)

    @property
    def name(self) -> str:
        return type(self.eager.__self__).__name__

    @property
    def module(self) -> Any:
        return self.eager.__self__

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
        if self.weights.moved():
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
        with capture_allowed() as allowed:
            if not allowed:  # background GPU work (a compile, for this module or another): no capture now
                return self._without_new_graph(graph, leaves, args, kwargs)
            result, captured = self._capture(key, leaves, spec, upgrade, graph, args, kwargs)
        if captured and self.kinds[key] == "eager":
            self._submit(key, leaves, spec)
        return result

    def _without_new_graph(self, graph: Any, leaves: list[Any], args: tuple, kwargs: dict) -> Any:
        if graph is None or graph is _MISSING:
            return self.eager(*args, **kwargs)
        return self.backend.replay(graph, leaves)

    def _capture(self, key: Any, leaves: list[Any], spec: Any, upgrade: bool, graph: Any, args: tuple,
                 kwargs: dict) -> tuple[Any, bool]:  # fmt: skip
        """Capture a graph of the compiled forward (``upgrade``) or of the eager one: this call's answer, and
        whether a graph was captured."""
        forward = self.compiled if upgrade and self.compiled is not None else self.eager
        try:
            captured, result = self.backend.capture(forward, leaves, spec)
        except Exception as exc:  # a module that cannot be captured still runs, eagerly
            # a full GPU or budget (--max-vram caps torch's allocator): the next call tries again
            if is_out_of_memory(exc):
                log.info("no memory to capture a graph of %s now; this call runs without", self.name)
                return self._without_new_graph(graph, leaves, args, kwargs), False
            log.warning("CUDA graph capture of %s failed; it runs eagerly: %s", self.name, reason(exc))
            if upgrade:  # keep the eager graph, never try the compiled one again
                self.compiled_keys.discard(key)
                return self._without_new_graph(graph, leaves, args, kwargs), False
            self.graphs[key] = None
            return self.eager(*args, **kwargs), False
        self.graphs[key] = captured
        self.kinds[key] = "compiled" if forward is not self.eager else "eager"
        return result, True

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


@dataclass
class Captured:
    graph: Any  # torch.cuda.CUDAGraph
    device: Any
    inputs: list[Any]  # static input tensors, None for the leaves that are not tensors
    outputs: list[Any]  # static output tensors
    out_spec: Any


class CudaGraphs:
    """Capture and replay with ``torch.cuda.CUDAGraph``; one memory pool per module, shared by its graphs, which
    is safe because they never run at the same time (the model manager runs one model per device at a time)."""

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
