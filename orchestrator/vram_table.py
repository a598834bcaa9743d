"""The README's VRAM table, generated from model_cards.yaml.

python -m orchestrator.vram_table            # rewrite the table in README.md
python -m orchestrator.vram_table --check    # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cards import CardSet, load_cards

START, END = "<!-- vram-table:start -->", "<!-- vram-table:end -->"


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


def update(readme: str, table: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"{path} has no {START} ... {END} markers", file=sys.stderr)
        return 1
    new = update(text, render(load_cards()))
    if args.check:
        if new != text:
            print(
                f"{path}'s VRAM table is out of date: run python -m orchestrator.vram_table", file=sys.stderr
            )
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
