"""Sections about speed: latency against the baseline, same-seed agreement, and the variants we tried."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import baseline as tm
from .context import Run
from .inputs import INSTRUCTION, NEGATIVE, PROMPT, QUESTION, SEED, photo
from .measure import Table, median_seconds, seconds

log = logging.getLogger(__name__)
SCHEDULER = "UniPCMultistepScheduler"  # the project's default for Text2Image and the ControlNets


def latency(run: Run) -> None:
    """Items 3 and 4: median of N calls, ours (fast path, and eager for reference) against the baseline."""
    s, orch, base = run.settings, run.orchestrator, run.baseline.tools
    size, (short, long) = s.size, s.steps
    picture, condition = photo(size), photo(size).convert("L").convert("RGB")
    for name in ("Text2Image", "CannyText2Image"):
        if name in base:
            tm.use_scheduler(base[name], orch.card_options(name).get("scheduler", SCHEDULER))
    blip_tokens = {n: int(orch.card_options(n).get("max_new_tokens", 30)) for n in orch.cards.names()}
    workloads: list[tuple[str, str, Callable[[Any], Any], Callable[[], Any]]] = [
        (f"Text2Image {size}², {short} steps", "Text2Image",
         lambda m: m.generate(PROMPT, NEGATIVE, size, size, short, 7.5, SEED),
         lambda: tm.text2image(base["Text2Image"], PROMPT, NEGATIVE, short, SEED, size)),
        (f"Text2Image {size}², {long} steps", "Text2Image",
         lambda m: m.generate(PROMPT, NEGATIVE, size, size, long, 7.5, SEED),
         lambda: tm.text2image(base["Text2Image"], PROMPT, NEGATIVE, long, SEED, size)),
        (f"ControlNet (canny) {size}², {short} steps", "CannyText2Image",
         lambda m: m.generate(condition, PROMPT, NEGATIVE, short, 7.5, SEED),
         lambda: tm.controlnet(base["CannyText2Image"], condition, PROMPT, NEGATIVE, short, SEED)),
        (f"InstructPix2Pix {size}², {short} steps", "InstructPix2Pix",
         lambda m: m.edit(picture, INSTRUCTION, short, 7.5, 1.2, SEED),
         lambda: tm.pix2pix(base["InstructPix2Pix"], picture, INSTRUCTION, short, SEED)),
        ("BLIP caption", "ImageCaptioning", lambda m: m.caption(picture),
         lambda: tm.blip(base["ImageCaptioning"], picture, None, blip_tokens["ImageCaptioning"])),
        ("BLIP VQA", "VisualQuestionAnswering", lambda m: m.answer(picture, QUESTION),
         lambda: tm.blip(base["VisualQuestionAnswering"], picture, QUESTION, blip_tokens["VisualQuestionAnswering"])),
    ]  # fmt: skip
    table = Table(f"Latency, median of {s.repeats} (seconds)",
                  ["workload", "baseline", "ours eager", "ours", "speed-up", "ours: compile warm-up s"],
                  note="Same weights, scheduler, steps, guidance and seed on both sides. 'ours' is the default: "
                       "CUDA-graph replay of the compiled UNet, ControlNet and VAE decoder, timed once the "
                       "background compile is done; for BLIP, greedy decoding with a static KV cache and a CUDA "
                       "graph replayed per token (nothing compiled, so no warm-up). 'ours eager' is --no-fast. The "
                       "warm-up is the time from a tool's first call until its compiled graphs are ready, on a cold "
                       "inductor cache (the calls meanwhile replay graphs of the eager forward; see 'Fast-path "
                       "warm-up').")  # fmt: skip
    for label, card, ours_call, base_call in workloads:
        if card not in base:
            continue
        with orch.manager.use(card) as model:
            fast = getattr(model, "fast", None)
            compiles = fast is not None and hasattr(model, "compile")  # BLIP's fast path compiles nothing
            if compiles:
                model.compile = True  # the default; the per-card section ran without it
            compiler = orch.fastpath.compiler
            warmup = (
                compile_warmup(lambda m=model, f=ours_call: f(m), s, compiler) if fast and compiles else None
            )
            ours = median_seconds(lambda m=model, f=ours_call: f(m), s.repeats, s.warmup)
            eager = None
            if fast is not None and (s.left() > 120 or "50" not in label):
                model.fast = False
                eager = median_seconds(lambda m=model, f=ours_call: f(m), s.repeats, s.warmup)["median"]
                model.fast = fast
        reference = median_seconds(base_call, s.repeats, s.warmup)
        ratio = reference["median"] / ours["median"]
        run.value(f"latency/{label}", {"baseline": reference, "ours": ours, "ours_eager": eager,
                                        "speedup": ratio, "compile_warmup_s": warmup})  # fmt: skip
        table.add(label, reference["median"], eager, ours["median"], f"{ratio:.1f}×", warmup)
    run.table(table)


def compile_warmup(call: Callable[[], Any], s: Any, compiler: Any, limit: float = 420) -> float | None:
    """Seconds from a tool's first call until the background compiler is done with what it queued (the
    second call captures the eager graphs and queues the compile); None when nothing was queued."""
    import time

    started = time.perf_counter()
    call()
    call()
    if not compiler.busy():
        return None
    if not compiler.wait(timeout=max(30.0, min(limit, s.left() - 60))):
        log.warning("the background compile did not finish in time; timing what is ready")
    return time.perf_counter() - started


def agreement(run: Run) -> None:
    """Same seed, same result: ours with the fast path against ours eager and against the baseline."""
    s, orch, base = run.settings, run.orchestrator, run.baseline.tools
    size, steps = s.size, s.steps[0]
    kwargs = dict(prompt=PROMPT, negative_prompt=NEGATIVE, width=size, height=size, guidance_scale=7.5,
                  output_type="np")  # fmt: skip
    with orch.manager.use("Text2Image") as model:
        fast = model._run(steps, SEED, None, **kwargs)
        model.fast = False
        eager = model._run(steps, SEED, None, **kwargs)
        model.fast = True
    reference = tm.text2image(base["Text2Image"], PROMPT, NEGATIVE, steps, SEED, size, output_type="np")
    pairs = [
        ("Text2Image: ours fast vs ours eager", fast, eager),
        ("Text2Image: ours fast vs baseline", fast, reference),
    ]
    if "CannyText2Image" in base:
        condition = photo(size).convert("L").convert("RGB")
        with orch.manager.use("CannyText2Image") as model:
            cn_fast = model._run(steps, SEED, None, image=condition, **kwargs)
            model.fast = False
            cn_eager = model._run(steps, SEED, None, image=condition, **kwargs)
            model.fast = True
        pairs.append(("ControlNet: ours fast vs ours eager", cn_fast, cn_eager))
    table = Table(f"Same seed, same image ({size}², {steps} steps; pixels in 0–1)",
                  ["pair", "max |diff|", "mean |diff|", "NaN share"])  # fmt: skip
    for pair, a, b in pairs:
        diff = np.abs(np.nan_to_num(a.astype(np.float64)) - np.nan_to_num(b.astype(np.float64)))
        nan = float(np.isnan(a).mean())
        run.value(f"agreement/{pair}", {"max": float(diff.max()), "mean": float(diff.mean()), "nan": nan})
        table.add(pair, float(diff.max()), float(diff.mean()), nan)
    run.table(table)


def variants(run: Run) -> None:
    """How the fast path was chosen: where a step's time goes, and what else was measured on it."""
    import torch

    from foundation_models.fastpath.graphs import release

    s, orch, base = run.settings, run.orchestrator, run.baseline.tools
    size, steps = s.size, s.steps[0]
    table = Table(
        f"Variants, Text2Image {size}² {steps} steps (seconds)", ["variant", "first call", "median"]
    )
    with orch.manager.use("Text2Image") as model:
        unet = model.pipe.unet
        eager_ms, graph_ms = _unet_alone(unet, size, s.repeats)
        run.value("unet_step_ms", {"eager": eager_ms, "graph": graph_ms})
        where = Table("Where a step goes (Text2Image, batch 2 with guidance; ms)", ["what", "ms"])
        where.add("UNet forward alone, eager", eager_ms)
        where.add("UNet forward alone, CUDA graph replay", graph_ms)
        timed = run.results["values"].get(f"latency/Text2Image {size}², {steps} steps")
        if timed:
            where.add(f"whole Text2Image call / {steps} steps, ours", timed["ours"]["median"] * 1000 / steps)
            where.add(
                f"whole Text2Image call / {steps} steps, baseline", timed["baseline"]["median"] * 1000 / steps
            )
        run.table(where)

        def generate() -> Any:
            return model.generate(PROMPT, NEGATIVE, size, size, steps, 7.5, SEED)

        def latents() -> Any:
            return model._run(steps, SEED, None, prompt=PROMPT, negative_prompt=NEGATIVE, width=size,
                              height=size, guidance_scale=7.5, output_type="latent")  # fmt: skip

        tried = [("ours, latents only (no VAE decode)", latents, None)]
        tried.append(("ours + cudnn.benchmark", generate, _setting(torch.backends.cudnn, "benchmark", True)))
        if torch.cuda.is_available():
            tried.append(("ours + channels_last UNet", generate, _channels_last(unet)))
        for label, call, setting in tried:
            release([unet])  # graphs are captured again, with this variant's kernels
            with setting or _nothing():
                timing = median_seconds(call, s.repeats, s.warmup)
            table.add(label, timing["first"], timing["median"])
        release([unet])
    pipe = base["Text2Image"]
    if torch.cuda.is_available() and s.left() > 150:
        torch._dynamo.config.cache_size_limit = 64  # one graph per block shape: 4 resolutions x batch sizes
        compile_time, _ = seconds(lambda: pipe.unet.compile_repeated_blocks(fullgraph=True))

        def compiled_graphed() -> Any:
            with torch.inference_mode(), orch.fastpath.pipeline(pipe):
                return tm.text2image(pipe, PROMPT, NEGATIVE, steps, SEED, size)

        for label, call in (
            (
                "regional torch.compile, eager launches",
                lambda: tm.text2image(pipe, PROMPT, NEGATIVE, steps, SEED, size),
            ),
            ("regional torch.compile + ours", compiled_graphed),
        ):
            timing = median_seconds(call, s.repeats, s.warmup)
            table.add(label, timing["first"] + compile_time, timing["median"])
            compile_time = 0.0
    run.table(table)


def _unet_alone(unet: Any, size: int, repeats: int) -> tuple[float, float]:
    """Milliseconds per UNet forward (batch 2, as with guidance), eager and replayed from a CUDA graph."""
    import torch

    from foundation_models.fastpath.graphs import graphed

    kw = {"device": unet.device, "dtype": unet.dtype}
    sample = torch.randn(2, unet.config.in_channels, size // 8, size // 8, **kw)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, **kw)
    timestep = torch.tensor(500, device=unet.device)

    def ten() -> None:
        for _ in range(10):
            unet(sample, timestep, encoder_hidden_states=context, return_dict=False)

    with torch.inference_mode():
        eager = median_seconds(ten, repeats)["median"]
        with graphed([unet]):
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


@contextmanager
def _nothing() -> Iterator[None]:
    yield
