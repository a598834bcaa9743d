"""The agreement section: same seed, same output, ours on the fast path against ours eager and the baseline."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from . import baseline as tm
from .context import Run
from .inputs import INSTRUCTION, NEGATIVE, PROMPT, QUESTION, SEED, photo
from .measure import Table
from .sections_speed import blip_tokens, same_scheduler

SIDES = ("ours fast", "ours eager", "baseline")
LABELS = {"CannyText2Image": "ControlNet"}  # the name earlier result files use for this row


def agreement(run: Run) -> None:
    """Each card's output three ways; pixel differences (0–1) or equal text, and a digest of every output."""
    same_scheduler(run)
    s = run.settings
    table = Table(f"Same seed, same output ({s.size}², {s.steps[0]} steps; pixels in 0–1)",
                  ["pair", "max |diff|", "mean |diff|", "NaN share", "identical"])  # fmt: skip
    for card, (ours, reference) in cases(run).items():
        if card not in run.baseline.tools or card not in run.orchestrator_cards():
            continue
        outputs = dict(zip(SIDES, (*_ours_twice(run, card, ours), reference())))
        label = LABELS.get(card, card)
        for other in SIDES[1:]:
            row = compare(outputs["ours fast"], outputs[other])
            run.value(f"agreement/{label}: ours fast vs {other}", row)
            table.add(f"{label}: ours fast vs {other}", row["max"], row["mean"], row["nan"],
                      "yes" if row["identical"] else "no")  # fmt: skip
        run.value(f"agreement_sha256/{card}", {side: digest(out) for side, out in outputs.items()})
        if s.save_images:
            save(outputs, s.save_images, card)
    run.table(table)


def cases(run: Run) -> dict[str, tuple[Callable[[Any], Any], Callable[[], Any]]]:
    """Card -> (ours given the loaded model, the baseline); diffusion returns float pixels, BLIP text."""
    s, base = run.settings, run.baseline.tools
    size, steps = s.size, s.steps[0]
    picture, condition = photo(size), photo(size).convert("L").convert("RGB")
    kwargs = dict(prompt=PROMPT, negative_prompt=NEGATIVE, width=size, height=size, guidance_scale=7.5,
                  output_type="np")  # fmt: skip
    return {
        "Text2Image": (lambda m: m._run(steps, SEED, None, **kwargs),
                       lambda: tm.text2image(base["Text2Image"], PROMPT, NEGATIVE, steps, SEED, size,
                                             output_type="np")),
        "CannyText2Image": (lambda m: m._run(steps, SEED, None, image=condition, **kwargs),
                            lambda: tm.controlnet(base["CannyText2Image"], condition, PROMPT, NEGATIVE, steps,
                                                  SEED, output_type="np")),
        "InstructPix2Pix": (lambda m: m._run(steps, SEED, None, prompt=INSTRUCTION, image=picture,
                                             guidance_scale=7.5, image_guidance_scale=1.2, output_type="np"),
                            lambda: tm.pix2pix(base["InstructPix2Pix"], picture, INSTRUCTION, steps, SEED,
                                               output_type="np")),
        "ImageCaptioning": (lambda m: m.caption(picture),
                            lambda: tm.blip(base["ImageCaptioning"], picture, None,
                                            blip_tokens(run, "ImageCaptioning"))),
        "VisualQuestionAnswering": (lambda m: m.answer(picture, QUESTION),
                                    lambda: tm.blip(base["VisualQuestionAnswering"], picture, QUESTION,
                                                    blip_tokens(run, "VisualQuestionAnswering"))),
    }  # fmt: skip


def _ours_twice(run: Run, card: str, call: Callable[[Any], Any]) -> tuple[Any, Any]:
    """(fast path, eager) outputs of one card; the model's setting is restored after."""
    with run.orchestrator.manager.use(card) as model:
        fast = model.fast
        model.fast = True
        on_fast_path = call(model)
        model.fast = False
        eager = call(model)
        model.fast = fast
    return on_fast_path, eager


def compare(a: Any, b: Any) -> dict[str, Any]:
    """Pixel differences of two float images, or for text only whether it is the same."""
    if isinstance(a, str):
        return {"max": None, "mean": None, "nan": None, "identical": a.strip() == b.strip()}
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = np.abs(np.nan_to_num(a) - np.nan_to_num(b))
    return {"max": float(diff.max()), "mean": float(diff.mean()), "nan": float(np.isnan(a).mean()),
            "identical": bool(np.array_equal(to_uint8(a), to_uint8(b)))}  # fmt: skip


def to_uint8(pixels: Any) -> np.ndarray:
    """Float pixels in 0–1 as the 8-bit image a user gets (diffusers rounds the same way)."""
    return (np.clip(np.nan_to_num(np.asarray(pixels, np.float64)), 0, 1) * 255).round().astype(np.uint8)


def digest(output: Any) -> str:
    """sha256 of the 8-bit image or of the text: equal digests, equal outputs."""
    data = output.strip().encode() if isinstance(output, str) else to_uint8(output).tobytes()
    return hashlib.sha256(data).hexdigest()


def save(outputs: dict[str, Any], folder: Any, card: str) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for side, output in outputs.items():
        name = f"{card}-{side.replace(' ', '-')}"
        if isinstance(output, str):
            (folder / f"{name}.txt").write_text(output + "\n", encoding="utf-8")
        else:
            Image.fromarray(to_uint8(output)).save(folder / f"{name}.png")
