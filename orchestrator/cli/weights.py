"""``python -m orchestrator download`` and ``python -m orchestrator weights``.

``download`` fetches exactly the files the --load cards' loaders read (shared checkpoints once), shows
the size and the free disk first, a progress bar per file, resumes interrupted files, and ends with a
per-card ready/missing summary. ``weights`` says which cards are ready offline, from where, how big.
Exit codes: 0 every card ready, 1 something missing or failed, 2 a bad --load spec.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..cards import CardSet, load_cards
from ..download import CardStatus, count, hub_cache, human, readiness, spec_needs
from ..errors import SpecError

if TYPE_CHECKING:
    from ..fetch import RepoPlan

DEFAULT_LOAD = "ImageCaptioning_auto,Text2Image_auto"
LOAD_HELP = "the cards whose weights to check, as for the app (Name_device,...), or 'all' for every card"


def add_weights_parsers(subparsers: argparse._SubParsersAction) -> None:
    download = subparsers.add_parser(
        "download", help="fetch exactly the weights the --load cards read (resumable, shared files once)"
    )
    download.add_argument("--load", default=DEFAULT_LOAD, help=LOAD_HELP)
    download.add_argument(
        "--model-dir", metavar="DIR", help="download into DIR/org/name instead of the HF cache"
    )
    download.add_argument("--dry-run", action="store_true", help="show what would be fetched, fetch nothing")
    download.set_defaults(handler=weights_command)
    weights = subparsers.add_parser(
        "weights", help="which --load cards are ready offline, from where, their size"
    )
    weights.add_argument("--load", default=DEFAULT_LOAD, help=LOAD_HELP)
    weights.add_argument("--model-dir", metavar="DIR", help="look in DIR/org/name before the HF cache")
    weights.add_argument("--json", action="store_true", help="one JSON list of cards and their checkpoints")
    weights.set_defaults(handler=weights_command)


def weights_command(args: argparse.Namespace) -> int:
    try:
        cards = load_cards()
        names = card_names(args.load, cards)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model_dir = Path(args.model_dir).expanduser() if args.model_dir else None
    if args.command == "download":
        return download(cards, names, model_dir, dry_run=args.dry_run)
    statuses = readiness(cards, names, model_dir)
    if args.json:
        print(json.dumps([status_as_dict(s) for s in statuses], indent=2))
    else:
        print(format_readiness(statuses))
    return 0 if all(s.ready for s in statuses) else 1


def card_names(spec: str, cards: CardSet) -> list[str]:
    from ..spec import parse_load_spec

    if spec.strip().lower() == "all":
        return cards.names()
    return [item.name for item in parse_load_spec(spec, cards)]


def download(cards: CardSet, names: list[str], model_dir: Path | None, dry_run: bool = False) -> int:
    print(f"Weights for {', '.join(names)} (a checkpoint shared by several cards is fetched once):")
    plans, failed = _plans(cards, names, model_dir)
    todo = sum(r.download_bytes for r in plans)
    partial = sum(len(r.partial) for r in plans)
    target = model_dir or hub_cache()
    free = shutil.disk_usage(_existing(target)).free
    resuming = f", resuming {count(partial, 'partial file')}" if partial else ""
    print(f"To download: {human(todo)} in {count(sum(len(r.todo) for r in plans), 'file')}{resuming}; "
          f"free on {target}: {human(free)}.")  # fmt: skip
    if todo > free:
        print(f"error: {human(todo)} to download but {human(free)} free on {target}; free some space "
              "or pass --model-dir DIR on a larger disk.", file=sys.stderr)  # fmt: skip
        return 1
    if dry_run:
        print("Dry run: nothing was fetched.")
    else:
        try:
            failed += _fetch_all(plans)
        except KeyboardInterrupt:
            print("\nInterrupted: run the same command again to resume where it stopped.", file=sys.stderr)
            return 130
    statuses = readiness(cards, names, model_dir)
    print(format_readiness(statuses))
    return 0 if all(s.ready for s in statuses) and not failed else 1


def _plans(cards: CardSet, names: list[str], model_dir: Path | None) -> tuple[list[RepoPlan], list[str]]:
    """One plan per repository (a hub request each); a repository that cannot be listed is reported."""
    from ..fetch import plan

    plans: list[RepoPlan] = []
    failed: list[str] = []
    for need in spec_needs(cards, names):
        try:
            repo = plan(need, model_dir)
        except Exception as exc:  # unreachable, offline, not found: reported, the others go on
            failed.append(need.repo_id)
            print(
                f"  {need.repo_id}: cannot list its files on the hub ({type(exc).__name__}: {_first_line(exc)})"
            )
            continue
        plans.append(repo)
        state = "already here" if not repo.todo else f"{human(repo.download_bytes)} to fetch"
        print(f"  {need.repo_id}: {count(len(repo.files), 'file')}, {human(repo.total_bytes)} ({state})")
    return plans, failed


def _fetch_all(plans: list[RepoPlan]) -> list[str]:
    from ..fetch import execute

    failed = []
    for repo in plans:
        try:
            execute(repo, bar=_bars(repo.need.repo_id))
        except Exception as exc:  # a failed repository does not stop the others
            failed.append(repo.need.repo_id)
            print(f"error: {repo.need.repo_id}: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
    return failed


def format_readiness(statuses: list[CardStatus]) -> str:
    rows = [("card", "status", "size", "where")]
    for s in statuses:
        where = ", ".join(sorted({c.where for c in s.checkpoints if c.ready})) if s.ready else "-"
        size = human(s.size_bytes) if s.ready and s.checkpoints else "-"
        rows.append((s.card, "ready" if s.ready else "missing", size, where or "(needs no weights)"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    unique = {c.repo_id: c for s in statuses for c in s.checkpoints}
    if unique:
        lines.append("\nCheckpoints:")
    for c in unique.values():
        detail = (
            f"{human(c.size_bytes)}  {c.where}: {c.path}" if c.ready else "missing: " + ", ".join(c.missing)
        )
        lines.append(f"  {c.repo_id}  {detail}")
    total = sum(c.size_bytes for c in unique.values() if c.ready)
    lines.append(f"On disk: {human(total)} (a shared checkpoint counted once).")
    missing = [s.card for s in statuses if not s.ready]
    if missing:
        lines.append(
            f"Missing weights: fetch them with `python -m orchestrator download --load {','.join(missing)}`."
        )
    return "\n".join(lines)


def status_as_dict(status: CardStatus) -> dict:
    checkpoints = [
        {"repo_id": c.repo_id, "ready": c.ready, "where": c.where or None, "path": str(c.path) if c.path else None,
         "size_bytes": c.size_bytes, "missing": list(c.missing)}
        for c in status.checkpoints
    ]  # fmt: skip
    return {
        "card": status.card,
        "ready": status.ready,
        "size_bytes": status.size_bytes,
        "checkpoints": checkpoints,
    }


def _bars(repo_id: str):
    from tqdm import tqdm

    def bar(path: str, total: int, initial: int) -> tqdm:
        return tqdm(desc=f"{repo_id.split('/')[-1]}/{path}", total=total, initial=initial, unit="B",
                    unit_scale=True, file=sys.stderr, mininterval=0.5, dynamic_ncols=True)  # fmt: skip

    return bar


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]
