"""Fast diffusion steps: CUDA-graph replay of the UNet and ControlNet forward, captured on first use.

SD1.5 at 512² on a large GPU is bound by kernel launches, not arithmetic: the eager UNet launches about a
thousand small kernels per step and the GPU waits for the CPU (on an H200, 45 ms per guided step eager,
12 ms replayed; docs/benchmarks.md). A CUDA graph records one forward's kernels once and replays them
with a single launch. Each input signature (shapes, dtypes, flags such as the
ControlNet scale) gets its own graph: the first call with a signature runs eager (it also warms cuDNN and
cuBLAS up), the second captures the graph (a fraction of a second, no compilation), the rest replay it. So
nothing blocks start-up, nothing needs a cache across restarts, and the eager path answers every call
until its graph exists, whenever capture fails (logged once), off CUDA, and with gradients on.

Turn it off with ``fast: false`` in a card's options (``Orchestrator(fast=False)``, ``--no-fast``) or
``VISUAL_ORCHESTRATOR_FAST=0``. Graphs read the weights at fixed addresses: moving a module (offloading
under a VRAM budget) must drop them (``release``), and a changed weight address drops them as well.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ENV_FLAG = "VISUAL_ORCHESTRATOR_FAST"
MAX_GRAPHS = 8  # signatures per module; more than that (a varying size every call) stay eager
_RUNNER = "_visual_orchestrator_graphs"
_MISSING = object()


def fast_enabled(flag: bool | None = None) -> bool:
    """The card's ``fast`` option when it is set, else the environment (on unless VISUAL_ORCHESTRATOR_FAST=0)."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(ENV_FLAG, "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def fast_pipeline(pipe: Any, enabled: bool = True) -> Iterator[None]:
    """Within the block, the pipeline's UNet and ControlNet replay CUDA graphs where they can."""
    with graphed(denoisers(pipe), enabled):
        yield


def denoisers(pipe: Any) -> list[Any]:
    """The modules of a diffusers pipeline that run once per step: its UNet and ControlNet."""
    return [m for m in (getattr(pipe, "unet", None), getattr(pipe, "controlnet", None)) if m is not None]


@contextmanager
def graphed(modules: Iterable[Any], enabled: bool = True) -> Iterator[None]:
    """Within the block, calls to these modules (``torch.nn.Module``) replay CUDA graphs where they can."""
    patched = []
    for module in modules if enabled else ():
        if _is_module(module) and "forward" not in module.__dict__:
            module.forward = runner_for(module)  # an instance attribute shadows the class's forward
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            module.__dict__.pop("forward", None)


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


class GraphedForward:
    """One module's forward: eager, or the replay of the graph captured for these inputs' signature."""

    def __init__(self, module: Any, backend: Any = None, max_graphs: int = MAX_GRAPHS):
        self.eager: Callable[..., Any] = type(module).forward.__get__(module)
        self.backend = backend or CudaGraphs()
        self.max_graphs = max_graphs
        self.graphs: dict[Any, Any] = {}  # signature -> captured graph, or None where capture failed
        self.seen: set[Any] = set()
        params = list(module.parameters())
        self._anchors = params[:: max(1, len(params) // 8)] + params[-1:]  # a few weights to notice moves
        self._weights: tuple | None = None

    def clear(self) -> None:
        self.graphs.clear()
        self.seen.clear()
        self.backend.reset()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        signature = self._signature(args, kwargs)
        if signature is None:
            return self.eager(*args, **kwargs)
        key, leaves, spec = signature
        weights = tuple((p.device, p.data_ptr()) for p in self._anchors)
        if weights != self._weights:
            self.clear()
            self._weights = weights
        graph = self.graphs.get(key, _MISSING)
        if graph is None:
            return self.eager(*args, **kwargs)
        if graph is not _MISSING:
            return self.backend.replay(graph, leaves)
        if key not in self.seen or len(self.graphs) >= self.max_graphs:
            self.seen.add(key)
            return self.eager(*args, **kwargs)
        try:
            graph, result = self.backend.capture(self.eager, leaves, spec)
        except Exception as exc:  # a module that cannot be captured still runs, eagerly
            log.warning("CUDA graph capture of %s failed; it runs eagerly: %s", type(self.eager.__self__).__name__,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)  # fmt: skip
            self.graphs[key] = None
            return self.eager(*args, **kwargs)
        self.graphs[key] = graph
        return result

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
