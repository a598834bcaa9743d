"""``visual-orchestrator finetune``: train an adapter for an hf: brain on traces (peft + TRL), scored before and after.

python -m orchestrator finetune --base hf:Qwen/Qwen2.5-1.5B-Instruct --data traces.jsonl --method lora --out adapters/qwen
python -m orchestrator run --brain hf:Qwen/Qwen2.5-1.5B-Instruct --adapter adapters/qwen "draw a cat"
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from .common import fail, table


def add_finetune_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune", help="fine-tune an hf: brain on traces (lora, qlora, prefix, freeze)"
    )
    parser.add_argument(
        "--base", required=True, metavar="hf:MODEL", help="the chat model: hf:<hub id or folder>"
    )
    parser.add_argument("--data", required=True, metavar="FILE", help="traces JSONL (traces export)")
    parser.add_argument("--method", choices=("lora", "qlora", "prefix", "freeze"), default="lora")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="where the adapter (freeze: the model) goes"
    )
    parser.add_argument(
        "--eval", dest="eval_data", metavar="FILE", help="held-out traces (default: split --held-out)"
    )
    parser.add_argument("--held-out", type=float, default=0.1, metavar="SHARE")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument(
        "--max-steps", type=int, default=-1, metavar="N", help="stop after N steps (overrides --epochs)"
    )
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default by method)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--prefix-tokens", type=int, default=16)
    parser.add_argument(
        "--freeze-layers", type=int, default=3, metavar="N", help="freeze: train the last N layers"
    )
    parser.add_argument("--packing", action="store_true", help="pack several traces into each sequence")
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="less memory, about 30%% slower"
    )
    parser.add_argument("--max-length", type=int, default=2048, metavar="TOKENS")
    parser.add_argument("--resume", action="store_true", help="go on from the last checkpoint in --out")
    parser.add_argument(
        "--device", default=None, help="cuda, cuda:N, mps or cpu (default: the best there is)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=finetune_command)
    return parser


def finetune_command(args: argparse.Namespace) -> int:
    if not args.base.startswith("hf:") or not args.base[3:].strip():
        return fail(2, f"--base {args.base} must name a local chat model as hf:<hub id or folder>.")
    missing = [name for name in ("peft", "trl", "datasets") if importlib.util.find_spec(name) is None]
    if missing:
        return fail(
            1,
            f"finetune needs {', '.join(missing)}; install them with: pip install 'visual-orchestrator[finetune]'",
        )
    from ..finetune.train import FinetuneConfig, finetune

    config = FinetuneConfig(
        base=args.base[3:].strip(), data=Path(args.data), method=args.method, out=Path(args.out),
        eval_data=Path(args.eval_data) if args.eval_data else None, held_out=args.held_out, epochs=args.epochs,
        max_steps=args.max_steps, learning_rate=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, prefix_tokens=args.prefix_tokens,
        freeze_layers=args.freeze_layers, packing=args.packing, gradient_checkpointing=args.gradient_checkpointing,
        max_length=args.max_length, resume=args.resume, device=args.device, seed=args.seed,
    )  # fmt: skip
    result = finetune(config)
    rows = [("method", "train", "held out", "tool-call accuracy before", "after", "seconds", "examples/s"),
            (result.method, str(result.train_examples), str(result.held_out), f"{result.accuracy_before:.0%}",
             f"{result.accuracy_after:.0%}", f"{result.seconds:.1f}", f"{result.examples_per_second:.1f}")]  # fmt: skip
    print("\n".join(table(rows)))
    serve = f"--brain {args.base}" + ("" if args.method == "freeze" else f" --adapter {args.out}")
    if args.method == "freeze":
        serve = f"--brain hf:{args.out}"
    print(f'serve it with: python -m orchestrator run {serve} "draw a cat"')
    return 0
