"""The background compiler: one worker thread that compiles modules' forwards, one job at a time, while calls go on.

A job holds the process-wide ``BACKGROUND_GPU_WORK`` lock while it compiles, so no graph is captured meanwhile,
and a compiled forward is never called for a signature it has not finished. On CUDA each job runs first in the
compile helper process (helper.py), so the compile here only traces and loads from inductor's cache; under a VRAM
budget the helper's memory is reserved with the budget's keeper first (budget.py).

Dynamo saves and restores the global RNG state around tracing, so a draw from the global generator on another
thread while a job runs may repeat; the tools draw from their own seeded generators.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .artifacts import CompiledArtifacts
from .budget import HelperMemoryBudget, HelperReservations
from .graphs import GraphedForward
from .helper import CompileHelper
from .inductor import inductor_compile
from .memory import is_out_of_memory, reason
from .regions import DYNAMIC_REGIONS, REGIONS, RegionCompiler
from .torch_state import BACKGROUND_GPU_WORK, TORCH_GLOBALS

log = logging.getLogger(__name__)

MAX_OUT_OF_MEMORY_COMPILES = 3  # compiles out of memory before the module keeps its uncompiled fast path
RETRY_HELPER_S = 10.0  # a compile that waits for the helper's room is queued again by a call this much later
_STOP = None  # the job that ends the worker thread


class BackgroundCompiler:
    """Compiles each module's ``regions`` (blocks of these classes, ``REGIONS``; regions.py), or the module whole.

    ``compile_fn`` turns a function into its compiled version (default: inductor, caching in ``cache_dir``);
    ``helper`` compiles CUDA jobs ahead in another process (None: all in here); ``budget`` keeps the helper's
    memory inside a VRAM budget (None: no budget); ``artifacts`` is the compiled-code file loaded before the first
    job (artifacts.py; None: none).
    """

    def __init__(self, compile_fn: Callable[..., Callable[..., Any]] | None = None,
                 regions: tuple[str, ...] | None = None, dynamic: bool = DYNAMIC_REGIONS, *,
                 helper: CompileHelper | None = None, budget: HelperMemoryBudget | None = None,
                 cache_dir: Path | None = None, artifacts: CompiledArtifacts | None = None):  # fmt: skip
        compile_fn = compile_fn or partial(inductor_compile, cache_dir=cache_dir)
        self.regions = RegionCompiler(compile_fn, REGIONS if regions is None else regions, dynamic)
        self.lock = BACKGROUND_GPU_WORK  # held whenever the worker touches the GPU (torch_state.py)
        self.helper = helper
        self.artifacts = artifacts
        self.reservations = HelperReservations(budget, self._stop_helper_for_memory)
        self._jobs: queue.Queue = queue.Queue()
        self._pending = 0
        self.jobs_submitted = 0  # ever, by every module: a caller sees whether its calls queued new compiles
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._retry_until = 0.0  # when (time.monotonic()) the last job put off for room may be queued
        self._prefetch: threading.Thread | None = None  # the compiled-code file's load beside the models
        self._prefetch_lock = threading.Lock()

    @property
    def budget(self) -> HelperMemoryBudget | None:
        return self.reservations.budget

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
        return self.regions.compiled_forward(forward)

    def compiled_here(self, runner: GraphedForward, example: list[Any], spec: Any, inference: bool) -> bool:
        """Whether every region of this job is compiled in this compiler already (one eager call tells)."""
        return self.regions.compiled_here(runner.eager, example, spec, inference)

    def busy(self) -> bool:
        return self._pending > 0

    def waiting_for_room(self) -> float:
        """Seconds until a compile put off for the helper's room (under a budget) may be queued again by a
        call; 0 when none waits."""
        return max(0.0, self._retry_until - time.monotonic())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued job is done (warm-up, benchmarks and tests); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """End the worker thread once the queued jobs are done, and stop the helper process."""
        if self._thread is not None and self._thread.is_alive():
            self._jobs.put(_STOP)
        if self.helper is not None:
            self.helper.close()
        self.reservations.release_all()

    def _load_artifacts(self, example: list[Any]) -> None:
        """The compiled-code file into inductor's caches before the first job compiles (once per process)."""
        if self.artifacts is None or self.artifacts.loaded is not None:
            return
        import torch

        device = next((x.device for x in example if isinstance(x, torch.Tensor) and x.is_cuda), None)
        self.load_artifacts(device)

    def load_artifacts(self, device: Any = None) -> Any:
        """Load the compiled-code file (once per process) and its regions compiled ahead; the load's outcome
        (artifacts.Outcome), None without a file. A bug in loading costs the head start only. Holds the GPU-work
        lock (which also keeps ``prefetch`` and the worker from loading at once): loading compiled code may load GPU
        kernels, which no graph capture may see."""
        if self.artifacts is None:
            return None
        with self.lock:
            first = self.artifacts.loaded is None
            try:
                outcome = self.artifacts.load(device)
                if first and self.artifacts.regions:
                    started = time.perf_counter()
                    count = self.regions.ahead.load(self.artifacts.regions)
                    log.info(
                        "%d regions compiled ahead ready in %.1f s", count, time.perf_counter() - started
                    )
            except Exception:
                log.warning("loading the compiled-code file failed; compiling as usual", exc_info=True)
                return None
            return outcome

    def prefetch(self, device: Any) -> None:
        """Start loading the compiled-code file in a thread of its own (once per process; nothing without a
        file): called as models start loading onto ``device``, so that a restarted server has the file's code
        ready by its first call instead of loading it then."""
        if self.artifacts is None or not self.artifacts.enabled or self.artifacts.loaded is not None:
            return
        with self._prefetch_lock:
            if self._prefetch is not None:
                return
            self._prefetch = threading.Thread(target=self.load_artifacts, args=(device,), daemon=True,
                                              name="visual-orchestrator-load-compiled")  # fmt: skip
        self._prefetch.start()

    def regions_ahead(self) -> dict[str, bytes]:
        """Every region signature compiled so far, compiled ahead and serialized (precompiled.py), with those
        loaded from the file; while no thread captures a graph or traces."""
        with self.lock, TORCH_GLOBALS:
            return self.regions.ahead.export()

    def _stop_helper_for_memory(self) -> None:
        if self.helper is not None:
            self.helper.stop_to_free_memory()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()  # a daemon thread: it waits for work until closed or the process ends
            if job is _STOP:
                return
            try:
                self._load_artifacts(job[2])
                try:
                    must_wait = self._compile_in_helper(*job)  # not holding the lock: graphs are captured
                except Exception as exc:  # the compile here goes on without the helper's head start
                    log.warning("compile helper failed: %s", reason(exc))
                    must_wait = False
                if must_wait:  # a budget with no room for the helper now: a later call queues it again
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
                    self.reservations.release_all()
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _compile_in_helper(self, runner: GraphedForward, key: Any, example: list[Any], spec: Any, ready: Any,
                           inference: bool) -> bool:  # fmt: skip
        """Have the helper process compile a CUDA job first, so that the compile here finds it in the caches.
        True: the job waits for a later call instead (a budget has no room for the helper now, or took it back),
        since compiling here would hold the lock for a minute and models swapped in meanwhile could not capture
        graphs."""
        import torch

        device = next((x.device for x in example if isinstance(x, torch.Tensor) and x.is_cuda), None)
        if self.helper is None or device is None or any(d != device for d, _ in runner.weights.where()):
            return False
        with self.lock, torch.cuda.device(device):  # GPU work here: no capture meanwhile
            stream = torch.cuda.Stream(device)
            if ready is not None:
                stream.wait_event(ready)
            with torch.cuda.stream(stream):
                if self._compiled_here_or_unknown(runner, example, spec, inference):
                    return False
        module = runner.module
        self.reservations.job_must_wait = False
        done = self.helper.prepare(module, example, spec, inference, self.regions.classes, self.regions.dynamic,
                                   reserve_memory=lambda: self.reservations.reserve(str(device), module))  # fmt: skip
        return not done and self.reservations.job_must_wait

    def _compiled_here_or_unknown(self, runner: GraphedForward, example: list[Any], spec: Any,
                                  inference: bool) -> bool:  # fmt: skip
        """``compiled_here``, or False when its eager call finds no memory (a full budget): the helper then
        compiles the job, needed or not."""
        try:
            return self.compiled_here(runner, example, spec, inference)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            log.info("no memory to check what %s needs compiled; the helper compiles it", runner.name)
            return False

    def _run(self, runner: GraphedForward, key: Any, example: list[Any], spec: Any, ready: Any,
             inference: bool) -> None:  # fmt: skip
        import torch

        started = time.perf_counter()
        device = next((x.device for x in example if isinstance(x, torch.Tensor) and x.is_cuda), None)
        mode = torch.inference_mode() if inference else torch.no_grad()  # the callers' mode: no recompile
        weights = runner.weights.where()
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
            self._failed(runner, key, weights, exc)
            return
        log.info("compiled %s for %s in %.1f s", runner.name, _shapes(key), time.perf_counter() - started)

    def _failed(self, runner: GraphedForward, key: Any, weights: tuple, exc: Exception) -> None:
        """A compile that failed: put off (its weights moved, or no memory just then), or given up for good."""
        if runner.weights.where() != weights:
            # Offloaded while it compiled (budget mode): not the compiler's fault. What compiled is in the
            # caches; the module's next call on the GPU queues the rest again.
            runner.submitted.discard(key)
            log.info("compile of %s put off: its weights moved meanwhile (%s)", runner.name, reason(exc))
            return
        if is_out_of_memory(exc) and runner.out_of_memory_compiles < MAX_OUT_OF_MEMORY_COMPILES:
            runner.out_of_memory_compiles += 1  # a budget full of models just then: a later call tries again
            runner.submitted.discard(key)
            log.info("compile of %s put off: out of memory (%s)", runner.name, reason(exc))
            return
        if not threading.main_thread().is_alive():  # inductor's worker pool is gone at exit
            log.debug("compile of %s cut short at exit: %s", runner.name, reason(exc))
            return
        runner.compile_failed = True
        log.warning(
            "torch.compile of %s failed; it keeps the uncompiled fast path: %s", runner.name, reason(exc)
        )
        log.debug("torch.compile of %s failed", runner.name, exc_info=True)


def _shapes(key: Any) -> str:
    return ", ".join(
        "x".join(map(str, k[0])) for k in key[1:] if isinstance(k, tuple) and isinstance(k[0], tuple)
    )
