"""Disk footprint of the weights each card needs, from the published file listings in hub_files.yaml.

Runs the downloader's own selection (orchestrator/download.py) over each repository's listing, so the
numbers are what ``python -m orchestrator download`` fetches. A checkpoint shared by several cards
(the SD1.5 base) counts once in a total.

    python benchmarks/weights_footprint.py            # print the tables
    python benchmarks/weights_footprint.py --write    # update docs/weights.md and README.md
    python benchmarks/weights_footprint.py --check    # exit 1 if either is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.cards import CardSet, load_cards  # noqa: E402
from orchestrator.download import card_needs, select_files, spec_needs  # noqa: E402

DATA = Path(__file__).with_name("hub_files.yaml")
DEFAULT_CARDS = ["ImageCaptioning", "Text2Image"]
BLOCKS = {  # file -> (start marker, end marker, what goes there)
    "docs/weights.md": ("<!-- weights-footprint:start -->", "<!-- weights-footprint:end -->", "tables"),
    "README.md": ("<!-- weights-total:start -->", "<!-- weights-total:end -->", "summary"),
}


def listings(confirmed_only: bool = False) -> dict[str, dict[str, int]]:
    repos = yaml.safe_load(DATA.read_text(encoding="utf-8"))["repos"]
    return {
        repo: {
            p: s for p, s in spec["files"].items() if not (confirmed_only and p in spec.get("uncertain", []))
        }
        for repo, spec in repos.items()
    }


def selected_bytes(cards: CardSet, names: list[str], repos: dict[str, dict[str, int]]) -> int:
    """Bytes fetched for ``names``, each repository once."""
    return sum(
        sum(repos[n.repo_id][f] for f in select_files(n, repos[n.repo_id])) for n in spec_needs(cards, names)
    )


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def tables(cards: CardSet) -> str:
    repos, confirmed = listings(), listings(confirmed_only=True)
    needed = spec_needs(cards, cards.names())
    lines = ["| repository | files fetched | fetched | whole repository (at least) |", "|---|---:|---:|---:|"]
    for need in needed:
        files = repos[need.repo_id]
        chosen = select_files(need, files)
        lines.append(f"| `{need.repo_id}` | {len(chosen)} | {gb(sum(files[f] for f in chosen))} | "
                     f"{gb(sum(files.values()))} |")  # fmt: skip
    lines += [
        "",
        "| --load name | weights it needs (dependencies included) | repositories |",
        "|---|---:|---|",
    ]
    for name in cards.names():
        needs = card_needs(cards, name)
        size = selected_bytes(cards, [name], repos)
        lines.append(
            f"| {name} | {gb(size) if needs else '–'} | {', '.join(n.repo_id for n in needs) or '–'} |"
        )
    lines += ["", summary(cards, repos, confirmed)]
    return "\n".join(lines)


def summary(cards: CardSet, repos: dict | None = None, confirmed: dict | None = None) -> str:
    repos, confirmed = repos or listings(), confirmed or listings(confirmed_only=True)
    default = selected_bytes(cards, DEFAULT_CARDS, repos)
    every, every_confirmed = (
        selected_bytes(cards, cards.names(), repos),
        selected_bytes(cards, cards.names(), confirmed),
    )
    whole = sum(sum(repos[n.repo_id].values()) for n in spec_needs(cards, cards.names()))
    note = (f" ({gb(every_confirmed)} if the fp16 files marked uncertain in benchmarks/hub_files.yaml are not "
            "published: the downloader then takes the fp32 safetensors)") if every_confirmed != every else ""  # fmt: skip
    return (
        f"**Disk footprint** (what `python -m orchestrator download` fetches; sizes from the published "
        f"repositories' file listings, not measured here): the default two cards ({' + '.join(DEFAULT_CARDS)}) "
        f"**{gb(default)}**; all {len(cards.names())} cards **{gb(every)}**{note}. The same repositories "
        f"downloaded whole hold at least {gb(whole)}."
    )


def render(name: str, cards: CardSet) -> str:
    return tables(cards) if BLOCKS[name][2] == "tables" else summary(cards)


def update(text: str, start: str, end: str, body: str) -> str:
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/weights.md and README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if they are out of date")
    args = parser.parse_args(argv)
    cards = load_cards()
    if not (args.write or args.check):
        print(tables(cards))
        return 0
    stale = []
    for name, (start, end, _) in BLOCKS.items():
        path = ROOT / name
        text = path.read_text(encoding="utf-8")
        if start not in text or end not in text:
            print(f"{name} has no {start} ... {end} markers", file=sys.stderr)
            return 1
        new = update(text, start, end, render(name, cards))
        if new != text:
            stale.append(name)
            if args.write:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(
            f"out of date: {', '.join(stale)}; run python benchmarks/weights_footprint.py --write",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
