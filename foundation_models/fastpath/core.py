"""``FastPath``: the fast path one Orchestrator owns (its compiler, compile helper, budget keeper and
compiled-code file)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .artifacts import CompiledArtifacts, Outcome
from .budget import HelperMemoryBudget
from .compiler import BackgroundCompiler
from .graphs import graph_batch
from .helper import CompileHelper
from .inductor import use_inductor_cache
from .pipelines import compile_state, fast_pipeline, release_pipeline
from .torch_state import building_models


class FastPath:
    """CUDA-graph replay and a background ``torch.compile`` for the models of one Orchestrator.

    ``enabled``: graphs at all (off: every call eager); ``compile``: the background compiler (off: graphs of the
    eager forward only); ``helper``: compile each CUDA job first in a helper process; ``cache_dir``: inductor's
    on-disk cache (None: torch's own choice); ``helper_budget``: who keeps the helper's GPU memory inside a VRAM
    budget (the model manager, under a CUDA budget; None: no budget); ``compiled_file``: the compiled-code file
    loaded before the first compile and written by ``save_compiled`` (artifacts.py), else ``compiled_dir``/<GPU
    model and torch>.bin (None for both: no file); ``compile_fn``: a stand-in for inductor (tests), which also
    leaves the helper out. A card's ``fast``/``compile`` option overrides the first two.
    """

    def __init__(self, *, enabled: bool = True, compile: bool = True, helper: bool = True,
                 cache_dir: Path | None = None, helper_budget: HelperMemoryBudget | None = None,
                 compiled_dir: Path | None = None, compiled_file: Path | None = None,
                 compile_fn: Callable[..., Callable[..., Any]] | None = None):  # fmt: skip
        self.enabled = enabled
        self.compile = compile
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.artifacts = CompiledArtifacts(compiled_dir, compiled_file, self.cache_dir)
        self.helper = CompileHelper(self.cache_dir) if helper and compile_fn is None else None
        self.compiler = BackgroundCompiler(compile_fn, helper=self.helper, budget=helper_budget,
                                           cache_dir=self.cache_dir, artifacts=self.artifacts)  # fmt: skip

    @property
    def helper_budget(self) -> HelperMemoryBudget | None:
        return self.compiler.budget

    def fast_for(self, options: Mapping[str, Any]) -> bool:
        """Graphs for a card with these options: its ``fast`` option when set, else this fast path's."""
        return _option(options, "fast", self.enabled)

    def compile_for(self, options: Mapping[str, Any]) -> bool:
        """The compiler for a card with these options: its ``compile`` option when set, else this fast path's."""
        return _option(options, "compile", self.compile)

    @contextmanager
    def pipeline(self, pipe: Any, fast: bool = True, compile: bool = True) -> Iterator[None]:
        """Within the block, the diffusers pipeline runs on the fast path (pipelines.py)."""
        with fast_pipeline(pipe, enabled=fast, compiler=self.compiler if compile else None):
            yield

    def compile_state(self, pipe: Any, fast: bool = True, compile: bool = True) -> str:
        """'compiled', 'compiling' or 'eager': how far the pipeline's compiled modules are (pipelines.py)."""
        return compile_state(pipe) if fast and compile else "eager"

    def load_compiled(self, device: Any = None) -> Outcome | None:
        """Load the compiled-code file now (the compiler does it before its first job otherwise); None without
        a file to look for, or with the compiler off."""
        return self.compiler.load_artifacts(device) if self.compile else None

    def prefetch_compiled(self, device: str) -> None:
        """Models start loading onto ``device``: on a GPU, load the compiled-code file beside them (a thread of
        its own), so that it is ready by the first call."""
        if self.compile and str(device).startswith("cuda"):
            self.compiler.prefetch(device)

    def save_compiled(self, device: Any = None) -> Outcome | None:
        """Write what this process compiled or loaded to the compiled-code file (``warmup`` does, as it ends)."""
        if not self.compile or not self.artifacts.enabled:
            return None
        jobs = self.helper.jobs_done if self.helper is not None else ()
        regions = self.compiler.regions_ahead()
        outcome = self.artifacts.save(jobs, device, regions=regions)
        ahead = getattr(getattr(self.compiler, "regions", None), "ahead", None)
        if outcome is not None and outcome.done and not regions and getattr(ahead, "unsupported", False):
            said = (" A restart still traces each compiled region again (seconds): this torch has no "
                    "aot_compile to save them traced (torch 2.11 and newer have it).")  # fmt: skip
            outcome = dataclasses.replace(outcome, message=outcome.message + said)
        return outcome

    @staticmethod
    def batch_size(waiting: int, limit: int, graphs: bool) -> int:
        """How many of ``waiting`` calls a pipeline runs as one batch (at most ``limit``): with ``graphs`` (its
        modules capture CUDA graphs, one set per shape) one of a few sizes (``graph_batch``), else all of them."""
        return graph_batch(waiting, limit) if graphs else max(1, min(waiting, limit))

    @staticmethod
    def release(pipe: Any) -> None:
        """Drop the pipeline's graphs before its modules move (graphs hold their device addresses)."""
        release_pipeline(pipe)

    @staticmethod
    @contextmanager
    def building_models() -> Iterator[None]:
        """Hold while building a model: no trace changes torch's global state meanwhile (torch_state.py)."""
        with building_models():
            yield

    def use_inductor_cache(self) -> Path | None:
        """Point inductor at this fast path's cache now (before anything compiles); the folder, or None."""
        use_inductor_cache(self.cache_dir)
        return self.cache_dir

    def close(self) -> None:
        """Stop the compiler's thread once its queue is done, and the compile helper process."""
        self.compiler.close()


def _option(options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = options.get(name)
    return default if value is None else bool(value)
