"""``visual-orchestrator plan SPEC``: where each model goes and the VRAM per device, loading nothing."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..cards import CardSet, load_cards
from ..errors import SpecError
from ..placement import Plan, make_plan
from ..spec import parse_budgets, parse_load_spec
from .common import ALL_CARDS_HINT, table


def add_plan_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("plan", help="show where each model goes and its VRAM, loading nothing")
    parser.add_argument("spec", help=ALL_CARDS_HINT)
    parser.add_argument("--max-vram", action="append", metavar="DEVICE=SIZE")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--int8-weights", action="store_true", help="count UNets and ControlNets at their int8 size"
    )
    parser.add_argument("--brain", default=None, metavar="BRAIN",
                        help="hf:<model id or folder>: keep the local brain's GPU memory free, as the app does")  # fmt: skip
    parser.add_argument("--quant", choices=("int8", "int4"), help="the hf: brain's --quant")
    parser.set_defaults(handler=plan_command)
    return parser


def plan_command(args: argparse.Namespace) -> int:
    from ..devices import devices_for  # looked up per call: tests replace it to pretend a GPU is there

    cards = load_cards()
    if args.int8_weights:
        cards = cards.with_int8_diffusion()
    items = parse_load_spec(args.spec, cards)
    budgets = parse_budgets(args.max_vram)
    devices = devices_for([i.device for i in items] + list(budgets))
    if args.brain:
        from ..brain import BrainConfig, BrainError
        from ..brain.footprint import keep_free_for_brain

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


def plan_as_dict(plan: Plan) -> dict:
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


def format_plan(plan: Plan, cards: CardSet) -> str:
    rows = [("model", "device", "own MB", "a call MB", "shared components (counted once per device)")]
    for name, placement in plan.placements.items():
        card = cards[name]
        shared = ", ".join(f"{g}:{'+'.join(c)}" for g, c in card.shares.items())
        rows.append((name, placement.device, f"{card.vram_mb:,}", f"{card.working_mb:,}", shared or "-"))
    lines = table(rows)
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
    lines += table(rows)
    lines.append(
        "\n'a call MB' is the memory one call takes on top of the weights (activations, CUDA-graph pools); a device"
        " runs one call at a time, so it keeps room for the largest."
    )
    estimated = any(cards[n].vram_source == "estimated" for n in plan.placements)
    if estimated:
        lines.append("\nVRAM figures marked estimated in model_cards.yaml come from parameter bytes (fp16).")
    return "\n".join(lines)
