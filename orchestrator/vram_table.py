"""The README's VRAM tables, generated from model_cards.yaml and data/local_brains.yaml.

The second table recommends a local (``hf:``) brain per GPU size: the largest known brain, at the highest
precision, that ``plan`` places beside each tool set (``recommend_brain``: the same placement code as the app).

python -m orchestrator.vram_table            # rewrite the table in README.md
python -m orchestrator.vram_table --check    # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .brain.base import BrainConfig
from .brain.footprint import keep_free_for_brain, known_brain_mb, known_brains
from .cards import CardSet, load_cards
from .devices import cuda_device
from .errors import PlacementError
from .placement import make_plan
from .spec import parse_load_spec

START, END = "<!-- vram-table:start -->", "<!-- vram-table:end -->"
BRAIN_START, BRAIN_END = "<!-- brain-table:start -->", "<!-- brain-table:end -->"
GPU_SIZES_GB = (8, 12, 16, 24)
CUDA_CONTEXT_MB = 600  # what the CUDA context and a desktop take before any model
TOOL_SETS = {
    "captions + text-to-image": "ImageCaptioning_cuda:0,Text2Image_cuda:0",
    "+ canny ControlNet + InstructPix2Pix": "ImageCaptioning_cuda:0,Text2Image_cuda:0,CannyText2Image_cuda:0,"
    "InstructPix2Pix_cuda:0",
}
QUANT_ORDER = (None, "int8", "int4")


def render(cards: CardSet) -> str:
    lines = [
        "| --load name | what it is | own VRAM (MB) | a call takes (MB) | shares | needs | tools |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for card in cards.cards.values():
        mark = "" if card.vram_source == "measured" else " *"
        shares = ", ".join(f"{g} ({'+'.join(c)})" for g, c in card.shares.items()) or "–"
        needs = ", ".join(card.depends_on) or "–"
        tools = ", ".join(f"`{t}`" for t in card.tools)
        lines.append(
            f"| {card.name} | {card.description} | {card.vram_mb:,}{mark} | {card.working_mb:,} | {shares} | {needs} "
            f"| {tools} |"
        )
    lines += ["", "| shared group | checkpoint | components (MB) |", "|---|---|---|"]
    for group in cards.groups.values():
        mark = "" if group.vram_source == "measured" else " *"
        comps = ", ".join(f"{c} {mb:,}{mark}" for c, mb in group.components.items())
        lines.append(f"| {group.name} | `{group.checkpoint}` | {comps} |")
    if any(c.vram_source == "estimated" for c in cards.cards.values()):
        lines += [
            "",
            "\\* estimated from parameter bytes (fp16); the others are measured on a GPU (docs/benchmarks.md).",
        ]
    return "\n".join(lines)


def fits(cards: CardSet, spec: str, gpu_mb: int, model: str, quant: str | None) -> bool:
    """Whether ``plan spec --brain hf:model --quant quant`` places everything on one GPU of ``gpu_mb`` MB."""
    devices = [cuda_device(0, gpu_mb, gpu_mb - CUDA_CONTEXT_MB)]
    devices = keep_free_for_brain(devices, BrainConfig(kind="hf", model=model, quant=quant))
    if devices[0].reserved_mb >= (devices[0].free_mb or 0):
        return False
    try:
        make_plan(cards, parse_load_spec(spec, cards), devices)
    except PlacementError:
        return False
    return True


def recommend_brain(cards: CardSet, spec: str, gpu_mb: int) -> tuple[str, str | None] | None:
    """The largest known brain, at its highest precision, that fits beside ``spec`` on the GPU; None if none."""
    by_size = sorted(known_brains(), key=lambda m: -float(known_brains()[m]["params"]))
    for model in by_size:
        for quant in QUANT_ORDER:
            if fits(cards, spec, gpu_mb, model, quant):
                return model, quant
    return None


def render_brains(cards: CardSet) -> str:
    lines = ["| GPU | tools on the same GPU | recommended `--brain` | brain MB |", "|---|---|---|---:|"]
    for size in GPU_SIZES_GB:
        for label, spec in TOOL_SETS.items():
            choice = recommend_brain(cards, spec, size * 1024)
            if choice is None:
                lines.append(f"| {size} GB | {label} | – (an openai brain elsewhere) | – |")
                continue
            model, quant = choice
            flag = f" --quant {quant}" if quant else ""
            lines.append(f"| {size} GB | {label} | `hf:{model}{flag}` | {known_brain_mb(model, quant):,} |")
    lines += ["", "| brain | 16-bit MB | int8 MB | int4 MB | languages | same model in Ollama |",
              "|---|---:|---:|---:|---|---|"]  # fmt: skip
    for model, facts in known_brains().items():
        sizes = " | ".join(f"{known_brain_mb(model, q):,}" for q in QUANT_ORDER)
        lines.append(
            f"| `{model}` | {sizes} | {', '.join(facts['languages'])} | `ollama pull {facts['ollama']}` |"
        )
    return "\n".join(lines)


def update(readme: str, table: str, start: str = START, end: str = END) -> str:
    head, _, rest = readme.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{table}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    for start, end in ((START, END), (BRAIN_START, BRAIN_END)):
        if start not in text or end not in text:
            print(f"{path} has no {start} ... {end} markers", file=sys.stderr)
            return 1
    cards = load_cards()
    new = update(update(text, render(cards)), render_brains(cards), BRAIN_START, BRAIN_END)
    if args.check:
        if new != text:
            print(
                f"{path}'s VRAM tables are out of date: run python -m orchestrator.vram_table",
                file=sys.stderr,
            )
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
