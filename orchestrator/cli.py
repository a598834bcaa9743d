"""Command line: ``python -m orchestrator {run,tools,plan,download,weights,warmup,ui}`` (also the
``visual-orchestrator`` script).

run: chat, one turn per message (cli_run.py); tools: the tools a --load spec exposes; plan: placement and VRAM,
loading nothing; download / weights: fetch the cards' checkpoints, or check they are on disk (cli_weights.py);
warmup: load and call every tool ahead of serving, filling the torch.compile cache on CUDA (cli_warmup.py);
ui: the Gradio app.

Exit codes: 0 success, 2 bad arguments or a spec that cannot be placed, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from .errors import OrchestratorError, SpecError

ALL_CARDS_HINT = "comma-separated Name_device items, e.g. ImageCaptioning_cuda:0,Text2Image_cuda:0"


def add_common_arguments(parser: argparse.ArgumentParser, load_required: bool = False) -> None:
    parser.add_argument("--load", required=load_required, default=None if load_required else
                        "ImageCaptioning_auto,Text2Image_auto", help=ALL_CARDS_HINT)  # fmt: skip
    parser.add_argument("--max-vram", action="append", metavar="DEVICE=SIZE",
                        help="memory budget per device, e.g. cuda:0=8GiB (models take turns, LRU)")  # fmt: skip
    parser.add_argument("--weights", choices=["hub", "tiny"], default="hub",
                        help="hub: real checkpoints (HF cache, hub or --model-dir); tiny: built locally, noise")  # fmt: skip
    parser.add_argument("--model-dir", metavar="DIR", help="local checkpoints laid out as DIR/org/name")
    # default None: the Orchestrator then reads VISUAL_ORCHESTRATOR_FAST / _COMPILE (on unless set to 0)
    parser.add_argument("--no-fast", dest="fast", action="store_false", default=None,
                        help="no CUDA-graph replay in the diffusion tools (eager, as diffusers runs them)")  # fmt: skip
    parser.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                        help="CUDA graphs of the eager forward only: no torch.compile in the background")  # fmt: skip
    parser.add_argument("--int8-weights", action="store_true",
                        help="store UNet and ControlNet weights as int8 (per-channel scales, fp16 compute): "
                             "about half their VRAM; images differ slightly")  # fmt: skip


def add_brain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--brain", default=None, metavar="BRAIN",
                        help="openai | rules | hf:<model id or folder> (default: openai when OPENAI_API_KEY or "
                             "OPENAI_BASE_URL is set, else rules)")  # fmt: skip
    parser.add_argument("--model", default=None, metavar="NAME", help="the openai brain's model name")
    parser.add_argument(
        "--quant", choices=("int8", "int4"), help="quantize an hf: brain (bitsandbytes, CUDA)"
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="let an hf: brain run its repository's code"
    )
    parser.add_argument("--session-dir", metavar="DIR", help="where sessions keep their images")


def orchestrator_from_args(args: argparse.Namespace, session_root: str | None = None):
    """The Orchestrator the common and brain flags describe (nothing loads yet)."""
    from .engine import Orchestrator

    return Orchestrator(args.load, weights=args.weights, model_dir=args.model_dir, max_vram=args.max_vram,
                        brain=args.brain, model=args.model, quant=args.quant,
                        trust_remote_code=args.trust_remote_code, fast=args.fast, compile=args.compile,
                        int8_weights=args.int8_weights,
                        session_root=session_root)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visual-orchestrator", description="A chat agent that sees and draws."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what loads and runs")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="show where each model goes and its VRAM, loading nothing")
    plan.add_argument("spec", help=ALL_CARDS_HINT)
    plan.add_argument("--max-vram", action="append", metavar="DEVICE=SIZE")
    plan.add_argument("--json", action="store_true")
    plan.add_argument(
        "--int8-weights", action="store_true", help="count UNets and ControlNets at their int8 size"
    )
    plan.add_argument("--brain", default=None, metavar="BRAIN",
                      help="hf:<model id or folder>: keep the local brain's GPU memory free, as the app does")  # fmt: skip
    plan.add_argument("--quant", choices=("int8", "int4"), help="the hf: brain's --quant")

    tools = sub.add_parser("tools", help="list the tools a --load spec exposes")
    add_common_arguments(tools)
    tools.add_argument("--json", action="store_true", help="a JSON list of {name, card, description, inputs}")

    from .cli_run import add_run_parser
    from .cli_warmup import add_warmup_parser
    from .cli_weights import add_weights_parsers
    from .ui import add_ui_arguments

    add_run_parser(sub)
    add_weights_parsers(sub)
    add_warmup_parser(sub)
    ui = sub.add_parser("ui", help="start the Gradio app (same as gradio_app.py)")
    add_ui_arguments(ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    # The app logs what loads and runs (a server's console); the other commands only warnings unless -v.
    verbose = args.verbose or args.command == "ui"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.WARNING)
    if args.command in ("run", "ui", "warmup"):  # per-file loading bars are noise here; downloads keep theirs
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        if args.command == "plan":
            return plan_command(args)
        if args.command == "tools":
            return tools_command(args)
        if args.command == "run":
            from .cli_run import run_command

            return run_command(args)
        if args.command in ("download", "weights"):
            from .cli_weights import weights_command

            return weights_command(args)
        if args.command == "warmup":
            from .cli_warmup import warmup_command

            return warmup_command(args)
        from .ui import launch_from_args

        return launch_from_args(args)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def plan_command(args: argparse.Namespace) -> int:
    from .cards import load_cards
    from .devices import devices_for
    from .placement import make_plan
    from .spec import parse_budgets, parse_load_spec

    cards = load_cards()
    if args.int8_weights:
        cards = cards.with_int8_diffusion()
    items = parse_load_spec(args.spec, cards)
    budgets = parse_budgets(args.max_vram)
    devices = devices_for([i.device for i in items] + list(budgets))
    if args.brain:
        from .brain import BrainConfig, BrainError
        from .brain.footprint import keep_free_for_brain

        try:
            config = BrainConfig.from_spec(args.brain, quant=args.quant)
        except BrainError as exc:  # a bad --brain is a bad argument, as for run and ui
            raise SpecError(str(exc)) from exc
        devices = keep_free_for_brain(devices, config)
    plan = make_plan(cards, items, devices, budgets)
    if args.json:
        print(json.dumps(plan_as_dict(plan), indent=2))
    else:
        print(format_plan(plan, cards))
    return 0


def tools_command(args: argparse.Namespace) -> int:
    """The tools of the cards named in --load; devices are not checked (nothing is placed or loaded)."""
    from .cards import load_cards
    from .spec import parse_load_spec
    from .toolbox import all_tools

    cards = load_cards()
    names = {item.name for item in parse_load_spec(args.load, cards)}
    tools = [t for t in all_tools(cards) if t.card in names]
    if args.json:
        print(json.dumps([t.describe() for t in tools], indent=2, ensure_ascii=False))
        return 0
    for tool in tools:
        inputs = ", ".join(p.name if p.required else f"[{p.name}]" for p in tool.params)
        print(f"{tool.name}({inputs})  [{tool.card}]\n    {tool.description}\n")
    return 0


def plan_as_dict(plan) -> dict:
    return {
        "placements": {
            name: {"device": p.device, "requested": p.requested} for name, p in plan.placements.items()
        },
        "devices": {
            name: {
                "cards": load.cards,
                "total_mb": load.total_mb,
                "working_mb": load.working_mb,
                "capacity_mb": load.capacity_mb,
                "free_mb": load.device.free_mb,
                "reserved_mb": load.device.reserved_mb,
                "budget_mb": load.budget_mb,
                "takes_turns": load.takes_turns,
            }
            for name, load in plan.devices.items()
        },  # fmt: skip
    }


def format_plan(plan, cards) -> str:
    rows = [("model", "device", "own MB", "a call MB", "shared components (counted once per device)")]
    for name, placement in plan.placements.items():
        card = cards[name]
        shared = ", ".join(f"{g}:{'+'.join(c)}" for g, c in card.shares.items())
        rows.append((name, placement.device, f"{card.vram_mb:,}", f"{card.working_mb:,}", shared or "-"))
    lines = _table(rows)
    lines.append("")
    rows = [("device", "models", "VRAM MB", "+ a call MB", "free MB", "budget MB", "note")]
    for name, load in plan.devices.items():
        free = f"{load.device.free_mb:,}" if load.device.free_mb is not None else "-"
        budget = f"{load.budget_mb:,}" if load.budget_mb is not None else "-"
        note = "over budget: models take turns (LRU)" if load.takes_turns else "fits"
        if load.device.reserved_mb:
            note += f"; {load.device.reserved_mb:,} MB of the free kept for {load.device.reserved_for}"
        rows.append(
            (name, str(len(load.cards)), f"{load.total_mb:,}", f"{load.working_mb:,}", free, budget, note)
        )
    lines += _table(rows)
    lines.append(
        "\n'a call MB' is the memory one call takes on top of the weights (activations, CUDA-graph pools); a device"
        " runs one call at a time, so it keeps room for the largest."
    )
    estimated = any(cards[n].vram_source == "estimated" for n in plan.placements)
    if estimated:
        lines.append("\nVRAM figures marked estimated in model_cards.yaml come from parameter bytes (fp16).")
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out
