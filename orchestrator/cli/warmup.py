"""``visual-orchestrator warmup``: load every model of the --load cards and fill the compile cache before serving.

    python -m orchestrator warmup --load "Text2Image_cuda:0,CannyText2Image_cuda:0,ImageCaptioning_cuda:0"

Each tool is called twice on a drawn 512x512 picture or its edge map (load + eager, then CUDA graphs and a
queued background torch.compile); when a card is on CUDA, warmup waits for the compiler and calls each tool
again, round after round while those calls queue more compiles (up to --timeout in all), then shows one more
call's seconds per tool: what a served request gets, and whether it is compiled. The compiled code stays in
inductor's cache under $VISUAL_ORCHESTRATOR_CACHE/inductor, and as warmup ends all of it is written to one file,
$VISUAL_ORCHESTRATOR_CACHE/compiled/<GPU>-torch<version>.bin (or --compiled FILE), which a server loads before
its first compile: copy that file to another machine with the same GPU model and torch and start the server
there with --compiled FILE. Run warmup with the server's flags on the GPU model that will serve (after install,
or a Docker build step with GPU access). Off CUDA nothing compiles; the calls still check that every checkpoint
loads and runs.

With --no-fast or --no-compile there is nothing to compile ahead: each tool is loaded and called once.
Exit code 0 every tool ran, 1 a tool failed (the others are still warmed) or the compile outlasted --timeout,
2 bad arguments or a --load spec that cannot be placed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ..errors import OrchestratorError, SpecError
from .common import add_common_arguments, fail, orchestrator_from_args, table

if TYPE_CHECKING:
    from ..warmup import WarmupReport

ERROR_WIDTH = 60  # the table's error column; whole messages go to stderr after the table


def add_warmup_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("warmup", help="load and call every tool ahead of serving; fill the "
                                   "torch.compile cache on CUDA", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_common_arguments(parser)
    parser.add_argument(
        "--tools", metavar="T1,T2", help="only these tools of the --load cards (default: all)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                        help="how long to wait for the background compile (default 900); longer: exit 1")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    # warmup chats with nobody: the rules brain keeps orchestrator_from_args from looking for an LLM
    parser.set_defaults(
        brain="rules", model=None, quant=None, trust_remote_code=False, handler=warmup_command
    )
    return parser


def warmup_command(args: argparse.Namespace) -> int:
    from ..warmup import warm_up

    if args.timeout <= 0:
        return fail(2, f"--timeout must be a positive number of seconds, got {args.timeout:g}.")
    names = [name.strip() for name in (args.tools or "").split(",") if name.strip()]
    try:
        report = warm_up(orchestrator_from_args(args), names or None, args.timeout, report=_progress)
    except SpecError as exc:
        return fail(2, str(exc))
    except OrchestratorError as exc:
        return fail(1, str(exc))
    except KeyboardInterrupt:
        return fail(1, "interrupted.")
    if args.json:
        print(json.dumps(report.as_dict(), indent=1, ensure_ascii=False))
    else:
        print(format_report(report))
    for row in report.rows:
        if row.error:
            print(f"error: {row.tool}: {row.error}", file=sys.stderr)
    if report.timed_out:
        print(f"error: {report.note}", file=sys.stderr)
    return report.exit_code


def format_report(report: WarmupReport) -> str:
    rows = [("tool", "card", "device", "first call s", "ready call s", "compile", "error")]
    for row in report.rows:
        error = row.error or "-"
        if len(error) > ERROR_WIDTH:
            error = error[: ERROR_WIDTH - 1] + "…"
        rows.append((row.tool, row.card, row.device, _seconds(row.first_seconds), _seconds(row.ready_seconds),
                     row.compile_state or "-", error))  # fmt: skip
    lines = table(rows)
    lines.append("")
    lines += [
        f"fast path fell back for {row.tool}: {row.fast_fallback}" for row in report.rows if row.fast_fallback
    ]
    lines.append(report.note)
    lines += [line for line in (report.compiled_loaded, report.compiled_saved) if line]
    failed = sum(1 for row in report.rows if row.error)
    outcome = f"{failed} of {len(report.rows)} tools failed" if failed else f"{len(report.rows)} tools ran"
    lines.append(f"{outcome} in {report.seconds:.1f} s. Inductor cache: {report.inductor_cache}")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
