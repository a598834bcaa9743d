"""The scheduler's share of a fast step: no host synchronisation between two UNet launches.

With the UNet replayed from a CUDA graph (graphs.py) the CPU needs less time to launch a step and run the
scheduler than the GPU needs to run it, so the CPU can stay ahead and the GPU never waits. A single host synchronisation per step breaks that: the CPU stops until the GPU has finished
the UNet, and the GPU then idles while the CPU works through the scheduler's Python and launches the next
step. diffusers' multistep schedulers synchronise several times per step:

* their sigma table stays on the CPU "to avoid too much CPU/GPU communication", and each step copies entries to
  the GPU with blocking copies (``sigmas[i].to(device)``);
* UniPC's corrector solves a 2x2 (or 3x3) system with ``torch.linalg.solve``, which reads the LAPACK status
  back to the host to raise on a singular matrix;
* the ancestral samplers draw their noise with the caller's CPU generator and copy it over, blocking.

``scheduler_on_device`` removes all three, for the length of a pipeline call, without changing any result:
the sigma table follows the timesteps to the GPU (the same arithmetic, on the GPU: pixels move within
rounding), and within ``step`` a thread-local ``TorchFunctionMode`` turns ``linalg.solve``
into ``linalg.solve_ex`` (same answer, status left on the device: UniPC's matrices are Vandermonde ones of
distinct nodes, never singular) and blocking host-to-device copies into copies from pinned memory that do
not wait (same bytes; the pinned buffer is kept until the copy is done).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

# Schedulers whose sigma table diffusers keeps on the CPU, and whose arithmetic is the same on the GPU.
SIGMAS_ON_DEVICE = ("UniPCMultistepScheduler", "DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler",
                    "EulerDiscreteScheduler")  # fmt: skip


@contextmanager
def scheduler_on_device(scheduler: Any, enabled: bool = True) -> Iterator[None]:
    """Within the block, the scheduler keeps its sigma table on the GPU and ``step`` never waits for it."""
    with ExitStack() as stack:
        if enabled and scheduler is not None:
            stack.enter_context(sigmas_on_device(scheduler))
            stack.enter_context(step_without_sync(scheduler))
        yield


def _patch(scheduler: Any, name: str, method: Any) -> Iterator[None]:
    """An instance attribute shadows the class's method for the block; a second patch leaves the first. It
    keeps the method's signature: pipelines read it (``step`` gets the generator only if it names one)."""
    if name in vars(scheduler):
        yield
        return
    setattr(scheduler, name, functools.update_wrapper(method, getattr(scheduler, name)))
    try:
        yield
    finally:
        vars(scheduler).pop(name, None)


@contextmanager
def sigmas_on_device(scheduler: Any, enabled: bool = True) -> Iterator[None]:
    """Within the block, ``set_timesteps`` leaves the sigma table where the timesteps are (the GPU)."""
    if not enabled or type(scheduler).__name__ not in SIGMAS_ON_DEVICE:
        yield
        return
    original = type(scheduler).set_timesteps

    def set_timesteps(*args: Any, **kwargs: Any) -> Any:
        result = original(scheduler, *args, **kwargs)
        device = scheduler.timesteps.device
        if device.type != "cpu":
            scheduler.sigmas = scheduler.sigmas.to(device)
        return result

    yield from _patch(scheduler, "set_timesteps", set_timesteps)


@contextmanager
def step_without_sync(scheduler: Any) -> Iterator[None]:
    """Within the block, the scheduler's ``step`` runs under ``NoHostSync`` (this thread only)."""
    original = type(scheduler).step

    def step(*args: Any, **kwargs: Any) -> Any:
        with NoHostSync():
            return original(scheduler, *args, **kwargs)

    yield from _patch(scheduler, "step", step)


def NoHostSync() -> Any:  # noqa: N802 (a class, made on first use so that importing this needs no torch)
    """A ``TorchFunctionMode`` that turns the host synchronisations of a scheduler step into asynchronous
    equivalents with the same results: ``linalg.solve`` without its status check, and blocking CPU-to-GPU
    copies as copies from pinned memory that do not block."""
    return _no_host_sync_class()()


@functools.cache
def _no_host_sync_class() -> type:
    import torch
    from torch.overrides import TorchFunctionMode

    class _NoHostSync(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
        ) -> Any:
            kwargs = kwargs or {}
            if func is torch.linalg.solve and "out" not in kwargs:
                return torch.linalg.solve_ex(*args, **kwargs).result
            if (
                func is torch.Tensor.to
                and args
                and args[0].device.type == "cpu"
                and _blocking_to_gpu(args, kwargs)
            ):
                return args[0].pin_memory().to(*args[1:], **{**kwargs, "non_blocking": True})
            return func(*args, **kwargs)

    return _NoHostSync


def _blocking_to_gpu(args: tuple, kwargs: dict) -> bool:
    import torch

    try:
        device, _, non_blocking, _ = torch._C._nn._parse_to(
            *args[1:], **{k: v for k, v in kwargs.items() if k != "copy"}
        )
    except (TypeError, RuntimeError):
        return False
    return device is not None and device.type == "cuda" and not non_blocking
