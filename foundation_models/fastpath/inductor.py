"""How the fast path calls inductor: whole-graph ``torch.compile`` with its code cached on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Inductor times several launch configurations of each new pointwise kernel on the GPU; without that a cold compile
# beside serving calls is shorter and the compiled calls are as fast (docs/benchmarks.md).
AUTOTUNE_POINTWISE = False
RECOMPILES_PER_GRAPH = 32  # compiled entries allowed per graph slot: see ``raise_recompile_limit``


def inductor_compile(
    forward: Callable[..., Any], dynamic: bool = False, cache_dir: Path | None = None
) -> Callable[..., Any]:
    """``torch.compile`` with inductor, whole graph; compiled code is cached on disk (in ``cache_dir`` when
    given) so that a restart takes seconds instead of a minute."""
    import torch

    use_inductor_cache(cache_dir)
    options = {"triton.autotune_pointwise": AUTOTUNE_POINTWISE}  # inductor's settings for this function only
    # The compiled function gets ``aot_compile`` (precompiled.py: a restart traces nothing) only when dynamo's
    # flag is on as it is made (on by default in torch 2.14, off in 2.11).
    ahead = {"enable_aot_compile": True} if hasattr(torch._dynamo.config, "enable_aot_compile") else {}
    if ahead:  # which guards a compile ahead saves (precompiled.py); a live compile keeps them all
        from .precompiled import guard_filter

        options["guard_filter_fn"] = guard_filter
    with torch._dynamo.config.patch(**ahead):
        return torch.compile(forward, fullgraph=True, dynamic=dynamic, options=options)


def use_inductor_cache(cache_dir: Path | None) -> None:
    """Point inductor (and any child process started later, through the environment) at ``cache_dir``."""
    if cache_dir is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)


def active_cache_dir(cache_dir: Path | None) -> Path:
    """The folder inductor writes to: ``cache_dir``, or torch's own choice when none was given."""
    if cache_dir is not None:
        return Path(cache_dir)
    from torch._inductor.runtime.cache_dir_utils import cache_dir as torch_cache_dir

    return Path(torch_cache_dir())


def raise_recompile_limit(max_graphs: int) -> None:
    """Room for one compiled entry per block class and input signature (dynamo's default is 8: the SD1.5 UNet
    alone has 14 resnet signatures, the VAE decoder 6 more; each resolution and batch adds a set)."""
    import torch

    config = torch._dynamo.config
    for limit in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, limit):
            setattr(config, limit, max(getattr(config, limit), RECOMPILES_PER_GRAPH * max_graphs))
