"""``visual-orchestrator tools``: the tools a --load spec exposes, as text or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import add_common_arguments


def add_tools_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("tools", help="list the tools a --load spec exposes")
    add_common_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="a JSON list of {name, card, description, inputs}"
    )
    parser.set_defaults(handler=tools_command)
    return parser


def tools_command(args: argparse.Namespace) -> int:
    """The tools of the cards named in --load; devices are not checked (nothing is placed or loaded)."""
    from ..cards import load_cards
    from ..spec import parse_load_spec
    from ..toolbox import all_tools

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
