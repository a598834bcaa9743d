"""Write measured VRAM from a benchmark results file into model_cards.yaml (vram_mb, working_mb, vram_source,
group sizes).

Only those fields change; comments, order and every other line stay as they are.

    python -m benchmarks.update_cards results.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

CARDS_FILE = Path(__file__).resolve().parent.parent / "model_cards.yaml"
SECTION = re.compile(r"^(groups|cards):\s*$")
ENTRY = re.compile(r"^  ([A-Za-z0-9_]+):\s*$")


def update(
    text: str, cards: dict[str, int], groups: dict[str, dict[str, int]], working: dict[str, int] | None = None
) -> str:
    """``text`` with each named card's ``vram_mb`` (and ``working_mb``, added after it where missing) and each
    group's component sizes set, marked measured."""
    working = working or {}
    out, section, entry = [], None, None
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if m := SECTION.match(line):
            section, entry = m.group(1), None
        elif m := ENTRY.match(line):
            entry = m.group(1)
        elif section == "cards" and entry in cards:
            line = re.sub(r"^(    vram_mb: )\d+", rf"\g<1>{cards[entry]}", line)
            line = re.sub(r"^(    vram_source: )\w+", r"\1measured", line)
        if section == "cards" and entry in working:
            if line.startswith("    working_mb:"):
                line = f"    working_mb: {working[entry]}\n"
            elif line.startswith("    vram_mb:") and not _has_field(lines, i + 1, "working_mb"):
                line += f"    working_mb: {working[entry]}\n"
        elif section == "groups" and entry in groups:
            if line.startswith("    components:"):
                sizes = ", ".join(f"{name}: {mb}" for name, mb in groups[entry].items())
                line = f"    components: {{{sizes}}}\n"
            line = re.sub(r"^(    vram_source: )\w+", r"\1measured", line)
        out.append(line)
    return "".join(out)


def _has_field(lines: list[str], start: int, name: str) -> bool:
    """Whether the entry that goes on at ``lines[start]`` has this field."""
    for line in lines[start:]:
        if not line.startswith("    "):
            return False
        if line.startswith(f"    {name}:"):
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--cards-file", type=Path, default=CARDS_FILE)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    cards = {
        name: max(0, int(r["resident_mb"])) for name, r in results["cards"].items() if not r.get("error")
    }
    working = {
        name: max(0, int(r["working_mb"]))
        for name, r in results["cards"].items()
        if not r.get("error") and r.get("working_mb") is not None
    }
    groups = {
        name: {c: max(0, int(mb)) for c, mb in comps.items()} for name, comps in results["groups"].items()
    }
    args.cards_file.write_text(update(args.cards_file.read_text(), cards, groups, working))
    print(f"updated {len(cards)} cards and {len(groups)} groups in {args.cards_file}")


if __name__ == "__main__":
    main()
