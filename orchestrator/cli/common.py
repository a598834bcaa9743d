"""What the commands share: the load and brain flags, the Orchestrator they describe, tables, error lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SpecError
from ..settings import Settings

if TYPE_CHECKING:
    from ..engine import Orchestrator
    from ..personas import Persona

ALL_CARDS_HINT = "comma-separated Name_device items, e.g. ImageCaptioning_cuda:0,Text2Image_cuda:0"


def add_common_arguments(parser: argparse.ArgumentParser, load_required: bool = False) -> None:
    parser.add_argument("--load", required=load_required, default=None if load_required else
                        "ImageCaptioning_auto,Text2Image_auto", help=ALL_CARDS_HINT)  # fmt: skip
    parser.add_argument("--max-vram", action="append", metavar="DEVICE=SIZE",
                        help="memory budget per device, e.g. cuda:0=8GiB (models take turns, LRU)")  # fmt: skip
    parser.add_argument("--weights", choices=["hub", "tiny"], default="hub",
                        help="hub: real checkpoints (HF cache, hub or --model-dir); tiny: built locally, noise")  # fmt: skip
    parser.add_argument("--model-dir", metavar="DIR", help="local checkpoints laid out as DIR/org/name")
    parser.add_argument("--no-fast", dest="fast", action="store_false",
                        help="no CUDA-graph replay in the diffusion tools (eager, as diffusers runs them)")  # fmt: skip
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="CUDA graphs of the eager forward only: no torch.compile in the background")  # fmt: skip
    parser.add_argument("--no-compile-helper", dest="compile_helper", action="store_false",
                        help="compile in the serving process, not first in a helper process")  # fmt: skip
    parser.add_argument("--compiled", metavar="FILE", type=Path,
                        help="compiled code to load before the first compile (warmup writes it; default: one file "
                             "per GPU model and torch version under $VISUAL_ORCHESTRATOR_CACHE/compiled)")  # fmt: skip
    parser.add_argument("--int8-weights", action="store_true",
                        help="store UNet and ControlNet weights as int8 (per-channel scales, fp16 compute): "
                             "about half their VRAM; images differ slightly")  # fmt: skip
    parser.add_argument("--fp8", action="store_true",
                        help="fp8 matmuls in UNets and ControlNets (torchao; GPUs of compute capability 8.9+, "
                             "e.g. H100, L40): faster at large sizes; images differ slightly")  # fmt: skip
    parser.add_argument("--max-batch", type=positive_int, default=None, metavar="N",
                        help="run up to N calls of one tool with the same size and steps that wait for a busy GPU as "
                             "one batch, each with its own prompt and seed (default 8; 1: one call at a time)")  # fmt: skip
    parser.add_argument("--batch-wait-ms", type=milliseconds, default=None, metavar="MS",
                        help="let a call wait up to MS for the calls of the last batch to come back (default 0)")  # fmt: skip


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def milliseconds(text: str) -> float:
    """An argparse type: a number of milliseconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds, 0 or more, got {text!r}")
    return value


def add_brain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--brain", default=None, metavar="BRAIN",
                        help="auto | openai | rules | hf:<model id or folder> (default auto: OPENAI_BASE_URL/"
                             "OPENAI_API_KEY if set, else a local Ollama/LM Studio/llama.cpp/vLLM, else rules)")  # fmt: skip
    parser.add_argument("--model", default=None, metavar="NAME", help="the openai brain's model name")
    parser.add_argument(
        "--quant", choices=("int8", "int4"), help="quantize an hf: brain (bitsandbytes, CUDA)"
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="let an hf: brain run its repository's code"
    )
    parser.add_argument("--adapter", metavar="DIR", help="a fine-tuned peft adapter over an hf: brain "
                        "(the --out folder of `finetune`)")  # fmt: skip
    parser.add_argument("--session-dir", metavar="DIR", help="where sessions keep their images")
    parser.add_argument("--refine", type=int, default=None, metavar="N",
                        help="check every generated image against the request (caption, VQA) and retry up to N "
                             "times when something asked for is missing (default 0: off)")  # fmt: skip
    parser.add_argument("--persona", metavar="NAME",
                        help="answer as this persona (personas/*.yaml, or your own in the persona folder)")  # fmt: skip


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray``: the model families on Ray Serve deployments (serve and ui; docs/scale-out.md)."""
    parser.add_argument("--ray", action="store_true",
                        help="run the models on Ray Serve deployments (deploy.yaml), the sessions in this process")  # fmt: skip
    parser.add_argument("--address", metavar="ADDR",
                        help="the Ray cluster to join, e.g. ray://head:10001 or auto (default: RAY_ADDRESS, else "
                             "a local cluster); with --ray")  # fmt: skip
    parser.add_argument("--deploy", metavar="FILE",
                        help="the deployments' file (default: the deploy.yaml shipped with the package); with --ray")  # fmt: skip


def persona_from_args(args: argparse.Namespace, orchestrator: Orchestrator) -> Persona | None:
    """The --persona chosen (None without one); an unknown name is a SpecError that lists the known ones."""
    from ..personas import choose, load_personas

    return choose(load_personas(orchestrator.settings.persona_dir), getattr(args, "persona", None))


def orchestrator_from_args(args: argparse.Namespace, session_root: str | None = None) -> Orchestrator:
    """The Orchestrator the common and brain flags describe (nothing loads yet); with --ray, its model families
    on Ray Serve deployments, started now (their replicas too load nothing until their first call)."""
    from ..engine import Orchestrator

    brain = {"brain": args.brain, "brain_options": {"model": args.model, "quant": args.quant,
                                                    "trust_remote_code": args.trust_remote_code,
                                                    "adapter": getattr(args, "adapter", None)}}  # fmt: skip
    settings = settings_from_args(args, session_root)
    if getattr(args, "ray", False):
        from ..cluster import serve_on_ray  # Ray itself is imported only there, and only now

        return serve_on_ray(args.load, settings=settings, deploy=args.deploy, address=args.address,
                            max_vram=args.max_vram, **brain)  # fmt: skip
    if getattr(args, "address", None) or getattr(args, "deploy", None):
        raise SpecError("--address and --deploy go with --ray.")
    return Orchestrator(args.load, settings=settings, max_vram=args.max_vram, **brain)


def settings_from_args(args: argparse.Namespace, session_root: str | Path | None = None) -> Settings:
    """The run's settings: the environment, then these flags (a flag that was not given leaves it)."""
    switched_off = {
        name: False for name in ("fast", "compile", "compile_helper") if getattr(args, name, True) is False
    }
    return Settings.from_env(weights=args.weights, model_dir=args.model_dir, session_root=session_root,
                             int8_weights=getattr(args, "int8_weights", False) or None,
                             fp8=getattr(args, "fp8", False) or None,
                             compiled_file=getattr(args, "compiled", None),
                             refine_rounds=getattr(args, "refine", None), max_batch=getattr(args, "max_batch", None),
                             batch_wait_ms=getattr(args, "batch_wait_ms", None), **switched_off)  # fmt: skip


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns under a dashed rule; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def fail(code: int, text: str) -> int:
    """Say what went wrong on stderr; returns the exit code to give."""
    print(f"error: {text}", file=sys.stderr)
    return code
