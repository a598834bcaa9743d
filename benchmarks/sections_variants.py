"""The variants section: where a Text2Image step goes, and the alternatives to the default fast path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from . import baseline as tm
from . import fastpath
from .context import Run
from .inputs import NEGATIVE, PROMPT, SEED
from .measure import Table, median_seconds, seconds


def variants(run: Run) -> None:
    """Each variant's first call and median on Text2Image, ours and the baseline's pipeline compiled."""
    import torch

    s = run.settings
    table = Table(
        f"Variants, Text2Image {s.size}² {s.steps[0]} steps (seconds)", ["variant", "first call", "median"]
    )
    with run.orchestrator.manager.use("Text2Image") as model:
        run.table(where_a_step_goes(run, model.pipe.unet))
        for label, call, setting in _ours_variants(run, model):
            fastpath.release([model.pipe.unet])  # graphs are captured again, with this variant's kernels
            with setting:
                timing = median_seconds(call, s.repeats, s.warmup)
            table.add(label, timing["first"], timing["median"])
        fastpath.release([model.pipe.unet])
    if torch.cuda.is_available() and s.left() > 150:  # compiling the baseline's UNet takes a minute or more
        for label, first, median in _regional_compile(run):
            table.add(label, first, median)
    run.table(table)


def where_a_step_goes(run: Run, unet: Any) -> Table:
    """One UNet forward alone (eager, graph replay) against a whole call's time per step."""
    s, steps = run.settings, run.settings.steps[0]
    eager_ms, graph_ms = _unet_alone(unet, s.size, s.repeats)
    run.value("unet_step_ms", {"eager": eager_ms, "graph": graph_ms})
    where = Table("Where a step goes (Text2Image, batch 2 with guidance; ms)", ["what", "ms"])
    where.add("UNet forward alone, eager", eager_ms)
    where.add("UNet forward alone, CUDA graph replay", graph_ms)
    timed = run.results["values"].get(f"latency/Text2Image {s.size}², {steps} steps")
    if timed:
        where.add(f"whole Text2Image call / {steps} steps, ours", timed["ours"]["median"] * 1000 / steps)
        where.add(
            f"whole Text2Image call / {steps} steps, baseline", timed["baseline"]["median"] * 1000 / steps
        )
    return where


def _ours_variants(run: Run, model: Any) -> list[tuple[str, Callable[[], Any], AbstractContextManager]]:
    import torch

    size, steps = run.settings.size, run.settings.steps[0]

    def generate() -> Any:
        return model.generate(PROMPT, NEGATIVE, size, size, steps, 7.5, SEED)

    def latents() -> Any:
        return model._run(steps, SEED, None, prompt=PROMPT, negative_prompt=NEGATIVE, width=size, height=size,
                          guidance_scale=7.5, output_type="latent")  # fmt: skip

    tried = [("ours, latents only (no VAE decode)", latents, nullcontext()),
             ("ours + cudnn.benchmark", generate, _setting(torch.backends.cudnn, "benchmark", True))]  # fmt: skip
    if torch.cuda.is_available():
        tried.append(("ours + channels_last UNet", generate, _channels_last(model.pipe.unet)))
    return tried


def _regional_compile(run: Run) -> list[tuple[str, float, float]]:
    """diffusers' own regional compile of the baseline's UNet, with eager launches and with our graphs."""
    import torch

    s, pipe = run.settings, run.baseline.tools["Text2Image"]
    steps = s.steps[0]
    torch._dynamo.config.cache_size_limit = 64  # one graph per block shape: 4 resolutions x batch sizes
    compile_time, _ = seconds(lambda: pipe.unet.compile_repeated_blocks(fullgraph=True))

    def eager_launches() -> Any:
        return tm.text2image(pipe, PROMPT, NEGATIVE, steps, SEED, s.size)

    def graphed() -> Any:
        with torch.inference_mode(), fastpath.fast_pipeline(run.orchestrator, pipe):
            return tm.text2image(pipe, PROMPT, NEGATIVE, steps, SEED, s.size)

    rows = []
    for label, call in (("regional torch.compile, eager launches", eager_launches),
                        ("regional torch.compile + ours", graphed)):  # fmt: skip
        timing = median_seconds(call, s.repeats, s.warmup)
        rows.append((label, timing["first"] + compile_time, timing["median"]))
        compile_time = 0.0  # the second variant reuses the compiled blocks
    return rows


def _unet_alone(unet: Any, size: int, repeats: int) -> tuple[float, float]:
    """Milliseconds per UNet forward (batch 2, as with guidance), eager and replayed from a CUDA graph."""
    import torch

    kw = {"device": unet.device, "dtype": unet.dtype}
    sample = torch.randn(2, unet.config.in_channels, size // 8, size // 8, **kw)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, **kw)
    timestep = torch.tensor(500, device=unet.device)

    def ten() -> None:
        for _ in range(10):
            unet(sample, timestep, encoder_hidden_states=context, return_dict=False)

    with torch.inference_mode():
        eager = median_seconds(ten, repeats)["median"]
        with fastpath.graphed([unet]):
            graph = median_seconds(ten, repeats)["median"]
    return eager * 100, graph * 100


@contextmanager
def _setting(owner: Any, name: str, value: Any) -> Iterator[None]:
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


@contextmanager
def _channels_last(unet: Any) -> Iterator[None]:
    import torch

    unet.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        unet.to(memory_format=torch.contiguous_format)
