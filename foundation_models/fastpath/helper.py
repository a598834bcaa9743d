"""Compile ahead in a helper process, so that serving never shares its CUDA context with a cold compile.

A cold compile in the serving process stalls its calls for seconds at a time (they share one CUDA context;
docs/benchmarks.md). So the background compiler first hands each CUDA job to this helper: it builds the module
again from its diffusers config (random weights: compiled code does not depend on their values), compiles the
same regions for the same input signature and runs them once, which fills inductor's and AOT autograd's on-disk
caches. The compile in the serving process then finds every graph there and only traces and loads.

The helper is one long-lived child process (``python -m foundation_models.fastpath.helper``), started on the
first job; jobs and answers are pickled over its stdin and stdout. Anything it cannot do (a module without a
diffusers config, int8 weights, a crash, a timeout) only means the serving process compiles that job itself.
Under a VRAM budget its memory is counted in the budget (budget.py).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import HELPER_MARKERS
from .inductor import active_cache_dir, inductor_compile, use_inductor_cache
from .regions import RegionCompiler

log = logging.getLogger(__name__)

TIMEOUT_S = 1800.0  # one job; a cold SD1.5 UNet takes a small fraction of it
# What the helper holds on the GPU beyond twice the model's weights (the weights and one call's activations):
# its CUDA context, cuBLAS/cuDNN workspaces and inductor's timing buffers.
HELPER_OVERHEAD_MB = 768


@dataclass(frozen=True)
class Recipe:
    """How to build a module again: a diffusers model class and its config, the module's attribute path in it
    ('' for the model itself), and the state of its weights that compiled code depends on."""

    cls: str  # "package.module:Class"
    config: str  # JSON
    attr: str
    dtype: str
    channels_last: bool
    requires_grad: bool


@dataclass(frozen=True)
class Job:
    recipe: Recipe
    leaves: list[Any]  # ("tensor", shape, stride, dtype, device) or ("value", value)
    spec: Any  # the inputs' pytree spec
    inference: bool
    regions: tuple[str, ...]
    dynamic: bool


def set_owner(module: Any, owner: Any, attr: str) -> None:
    """Say that ``module`` is ``owner.<attr>`` (the VAE's decoder has no config of its own; its VAE does)."""
    object.__setattr__(module, "_visual_orchestrator_owner", (weakref.ref(owner), attr))


def recipe_for(module: Any) -> Recipe | None:
    """The recipe of a diffusers model (or of a module inside one, see ``set_owner``), or None."""
    import torch

    root, attr = module, ""
    owned = module.__dict__.get("_visual_orchestrator_owner")
    if owned is not None:
        root, attr = owned[0](), owned[1]
        if root is None:
            return None
    config = getattr(root, "config", None)
    if config is None or not hasattr(type(root), "from_config"):
        return None
    named = list(module.named_parameters())
    params = [p for _, p in named]
    if not params or any(not p.is_floating_point() or p.dtype != params[0].dtype for p in params):
        return None  # int8 weights and the like: not built from a config
    if any(type(p) is not torch.nn.Parameter for p in params) or any(".lora_" in name for name, _ in named):
        return None  # fp8 tensor subclasses, LoRA layers: the config alone builds something else
    kernel = next((p for p in params if p.dim() == 4 and p.shape[2] * p.shape[3] > 1), None)
    channels_last = (
        kernel is not None
        and not kernel.is_contiguous()
        and kernel.is_contiguous(memory_format=torch.channels_last)
    )
    try:  # the private keys (_name_or_path is a Path once loaded from disk) do not build anything
        config_json = json.dumps({k: v for k, v in config.items() if not k.startswith("_")}, sort_keys=True)
    except TypeError:
        return None
    return Recipe(
        f"{type(root).__module__}:{type(root).__qualname__}",
        config_json,
        attr,
        str(params[0].dtype).removeprefix("torch."),
        channels_last,
        params[0].requires_grad,
    )


def helper_need_mb(module: Any) -> int:
    """MB the helper holds on the GPU while it compiles ``module``: the model it builds (the whole owner for a
    module inside one), a call's activations (about as much again) and ``HELPER_OVERHEAD_MB``."""
    owner = getattr(module, "_visual_orchestrator_owner", None)
    root = owner[0]() if owner is not None else None
    model = root if root is not None else module
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return 2 * weights // 2**20 + HELPER_OVERHEAD_MB


def describe(leaves: list[Any]) -> list[Any]:
    import torch

    return [
        ("tensor", tuple(x.shape), tuple(x.stride()), str(x.dtype).removeprefix("torch."), str(x.device))
        if isinstance(x, torch.Tensor)
        else ("value", x)
        for x in leaves
    ]


class CompileHelper:
    """The parent's side: one child process, one job at a time (the background compiler's thread calls it).
    ``cache_dir`` is inductor's cache the child fills (None: torch's own choice)."""

    def __init__(self, cache_dir: Path | None = None, timeout_s: float = TIMEOUT_S):
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.broken = False  # after a crash or a timeout: the serving process compiles by itself from then on
        self._stopping_for_memory = False  # the helper is being stopped on purpose (a call wants its memory)
        self._told: set[str] = set()
        # the markers of the jobs whose code is in the caches (a compiled-code file lists them)
        self.jobs_done: set[str] = set()

    def prepare(self, module: Any, leaves: list[Any], spec: Any, inference: bool, regions: tuple[str, ...],
                dynamic: bool, reserve_memory: Callable[[], bool] | None = None) -> bool:  # fmt: skip
        """Compile this module's forward for these inputs in the helper; True when it did (the caches hold it).

        ``reserve_memory()``, when given, is asked before the helper works on the job (not for a job the cache
        holds already): False means no memory for it (the caller decides whether to compile here or later)."""
        recipe = recipe_for(module)
        if recipe is None or self.broken:
            if recipe is None and type(module).__name__ not in self._told:
                self._told.add(type(module).__name__)
                log.info("compile helper: %s is not built from a diffusers config; compiling it here",
                         type(module).__name__)  # fmt: skip
            return False
        try:
            job = Job(recipe, describe(leaves), spec, inference, tuple(regions), dynamic)
            payload = pickle.dumps(job)
        except Exception as exc:  # an input that does not pickle: compile here
            log.debug("compile helper: cannot send %s: %s", type(module).__name__, exc)
            return False
        done = self._marker(payload, leaves)
        if done.exists():  # compiled before, into this cache: the compile here finds it without the helper
            self.jobs_done.add(done.name)
            return True
        with self._lock:
            if reserve_memory is not None and not reserve_memory():
                return False
            started = time.perf_counter()
            answer = self._ask(payload)
        if answer is None:
            return False
        if not answer.get("ok"):
            log.info("compile helper could not compile %s (%s); compiling it here", type(module).__name__,
                     answer.get("error"))  # fmt: skip
            return False
        log.info("compile helper compiled %s in %.1f s (its allocator's peak %s MB)", type(module).__name__,
                 time.perf_counter() - started, answer.get("peak_mb", "?"))  # fmt: skip
        done.parent.mkdir(parents=True, exist_ok=True)
        done.touch()
        self.jobs_done.add(done.name)
        return True

    def close(self) -> None:
        with self._lock:
            self._stop()

    def stop_to_free_memory(self) -> None:
        """Stop the helper now, from any thread, to give its GPU memory back (a call needs it). The job it was
        on waits for a later call; the next job starts the helper again."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._stopping_for_memory = True
            proc.kill()

    def _ask(self, payload: bytes) -> dict | None:
        try:
            proc = self._start()
            timer = threading.Timer(self.timeout_s, proc.kill)
            timer.start()
            try:
                proc.stdin.write(len(payload).to_bytes(8, "little") + payload)
                proc.stdin.flush()
                size = int.from_bytes(_read(proc.stdout, 8), "little")
                return pickle.loads(_read(proc.stdout, size))
            finally:
                timer.cancel()
        except Exception as exc:
            if self._stopping_for_memory:
                log.info("compile helper stopped to give its memory to a call; compiling this job here")
            else:
                self.broken = True
                log.warning("compile helper stopped (%s); compiling in this process from now on", exc)
            self._stopping_for_memory = False
            self._stop()
            return None

    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stopping_for_memory = False
        use_inductor_cache(self.cache_dir)  # the child inherits the cache folder through the environment
        log_path = active_cache_dir(self.cache_dir) / "compile-helper.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if log_path.exists() and log_path.stat().st_size > 8 << 20:
            log_path.unlink()  # only the last runs matter
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)  # passed on as it is, but for this package on the child's import path
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        with open(log_path, "ab") as stderr:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "foundation_models.fastpath.helper"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env,
            )  # fmt: skip
        return self._proc

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _marker(self, payload: bytes, leaves: list[Any]) -> Path:
        """The file that says this job went through the helper into the current inductor cache (it lives there,
        so emptying the cache forgets it), for this torch and this GPU model."""
        import torch

        use_inductor_cache(self.cache_dir)  # the folder the compile here will use
        device = next((x.device for x in leaves if isinstance(x, torch.Tensor)), None)
        gpu = torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else "cpu"
        digest = hashlib.sha256(payload + f"|{torch.__version__}|{gpu}".encode()).hexdigest()[:32]
        return active_cache_dir(self.cache_dir) / HELPER_MARKERS / digest


def _read(stream: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError("the helper process exited")
        data += chunk
    return data


# -- the child ----------------------------------------------------------------------------------
class _Worker:
    def __init__(self) -> None:
        self.key: Any = None
        self.module: Any = None
        self.compiled: Any = None
        self.regions: RegionCompiler | None = None

    def run(self, job: Job) -> dict:
        import torch
        from torch.utils._pytree import tree_unflatten

        device = next(
            (torch.device(leaf[4]) for leaf in job.leaves if leaf[0] == "tensor"), torch.device("cpu")
        )
        started = time.perf_counter()
        self._build(job, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        args, kwargs = tree_unflatten([_example(leaf) for leaf in job.leaves], job.spec)
        mode = torch.inference_mode() if job.inference else torch.no_grad()
        with mode:
            if device.type == "cuda":
                with torch.cuda.device(device):
                    self.compiled(*args, **kwargs)
                    torch.cuda.synchronize(device)
                peak = round(torch.cuda.max_memory_reserved(device) / 2**20)
            else:
                self.compiled(*args, **kwargs)
                peak = 0
        return {"ok": True, "seconds": time.perf_counter() - started, "peak_mb": peak}

    def _build(self, job: Job, device: Any) -> None:
        import torch

        key = (job.recipe, str(device), job.regions, job.dynamic)
        if key == self.key:
            return
        self.key = self.module = self.compiled = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
        module_name, _, cls_name = job.recipe.cls.partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        with torch.device(device):
            root = cls.from_config(json.loads(job.recipe.config))
        module = root
        for part in filter(None, job.recipe.attr.split(".")):
            module = getattr(module, part)
        module.to(getattr(torch, job.recipe.dtype)).eval().requires_grad_(job.recipe.requires_grad)
        if job.recipe.channels_last:
            module.to(memory_format=torch.channels_last)
        if self.regions is None or (self.regions.classes, self.regions.dynamic) != (job.regions, job.dynamic):
            self.regions = RegionCompiler(inductor_compile, job.regions, job.dynamic)
        self.compiled = self.regions.compiled_forward(type(module).forward.__get__(module))
        self.key, self.module = key, module


def _example(leaf: Any) -> Any:
    import torch

    if leaf[0] != "tensor":
        return leaf[1]
    _, shape, stride, dtype, device = leaf
    tensor = torch.empty_strided(shape, stride, dtype=getattr(torch, dtype), device=device)
    if tensor.is_floating_point():
        tensor.normal_()
    else:
        tensor.zero_()
    return tensor


def main() -> None:
    protocol_in = sys.stdin.buffer
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to the log, not into the answers
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    worker = _Worker()
    while True:
        try:
            size = int.from_bytes(_read(protocol_in, 8), "little")
        except EOFError:
            return
        try:
            job = pickle.loads(_read(protocol_in, size))
            answer = worker.run(job)
        except Exception as exc:
            log.exception("job failed")
            worker.key = None
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        payload = pickle.dumps(answer)
        protocol_out.write(len(payload).to_bytes(8, "little") + payload)
        protocol_out.flush()


if __name__ == "__main__":
    main()
