"""Exploration (device): BLIP caption and VQA, ``model.generate`` against the fast greedy path (foundation_models/fastpath/blip.py).

Full-size BLIP (the configs in benchmarks/configs/Salesforce), seeded random weights, fp16 on CUDA; the
tokenizer is the benchmark's BERT-shaped one (benchmarks/weights.py). Prints one JSON line per figure, then a
table: median ms over ``--repeats`` calls of generate, of the static-cache loop without graphs, and of the fast
path; the first fast call (it captures the graphs; the JSON line adds the GPU memory they hold); the
encoders alone; ms per new token on the fast path; new tokens; whether the ids are equal.
Random weights may meet eos early, so the number of new tokens is reported; where the ids differ, the line says
at which token and by how much generate's top two logits were apart there (a near-tie is rounding, not a bug).

    PYTHONPATH=. python benchmarks/explore_blip.py                 # H200: about a minute
    PYTHONPATH=. python benchmarks/explore_blip.py --tiny          # CPU smoke run: tiny weights, no graphs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.inputs import QUESTION, photo  # noqa: E402
from foundation_models.fastpath.blip import FastGreedy  # noqa: E402

CONFIGS = Path(__file__).parent / "configs"
REPOS = {"caption": "Salesforce/blip-image-captioning-base", "vqa": "Salesforce/blip-vqa-base"}


def emit(rows: list[dict], **row: Any) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def build(task: str, device: str, tiny: bool, folder: Path) -> tuple[Any, Any]:
    """(model, processor): full size from the config with random weights, or the tiny checkpoint."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipForQuestionAnswering, BlipProcessor

    model_class = BlipForConditionalGeneration if task == "caption" else BlipForQuestionAnswering
    target = folder / task
    torch.manual_seed(0)
    if tiny:
        from foundation_models.tiny import build_tiny_checkpoint

        build_tiny_checkpoint(REPOS[task], target)
        model = model_class.from_pretrained(target)
    else:
        from transformers import BertTokenizer, BlipImageProcessor

        from benchmarks.weights import _write_bert_tokenizer

        _write_bert_tokenizer(target, extra=["[DEC]", "[ENC]"], bos_token="[DEC]", model_max_length=512)
        BlipImageProcessor.from_pretrained(CONFIGS / REPOS[task]).save_pretrained(target)
        BertTokenizer.from_pretrained(target).save_pretrained(target)
        with torch.device(device):
            model = model_class(BlipConfig.from_pretrained(CONFIGS / REPOS[task]))
    dtype = torch.float32 if device == "cpu" else torch.float16
    return model.to(device, dtype).eval().requires_grad_(False), BlipProcessor.from_pretrained(target)


def timed(call: Any, repeats: int) -> tuple[float, Any]:
    """Median milliseconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        result = call()
        sync()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def held_mb() -> float:
    """GPU memory held, less what the caching allocator keeps free (capture empties that cache anyway)."""
    if not torch.cuda.is_available():
        return 0.0
    torch.cuda.empty_cache()
    return torch.cuda.memory_reserved() / 2**20


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def encode(model: Any, inputs: Any) -> Any:
    """What the decoder cross-attends to: the image, or for VQA the question read against it."""
    states = model.vision_model(pixel_values=inputs["pixel_values"])[0]
    if hasattr(model, "text_encoder"):
        states = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                    encoder_hidden_states=states, return_dict=False)[0]  # fmt: skip
    return states


def divergence(model: Any, inputs: Any, reference: Any, ours: Any) -> dict[str, Any]:
    """Where the ids first differ, and generate's top-two logit gap for that token (teacher-forced)."""
    length = min(reference.shape[1], ours.shape[1])
    differs = (reference[0, :length] != ours[0, :length]).nonzero()
    at = int(differs[0]) if len(differs) else length
    with torch.inference_mode():
        states = encode(model, inputs)
        logits = model.text_decoder(input_ids=reference[:, :at], encoder_hidden_states=states).logits[0, -1]
    top = logits.float().topk(2).values
    return {"first_difference_at": at, "generate_top2_gap": float(top[0] - top[1]),
            "generate_token": int(reference[0, at]) if at < reference.shape[1] else None,
            "fast_token": int(ours[0, at]) if at < ours.shape[1] else None}  # fmt: skip


def bench(task: str, args: argparse.Namespace, device: str, folder: Path, rows: list[dict]) -> None:
    model, processor = build(task, device, args.tiny, folder)
    text = QUESTION if task == "vqa" else None
    inputs = processor(images=photo(384), text=text, return_tensors="pt").to(device, model.dtype)
    gpu = torch.cuda.get_device_name() if device != "cpu" else "cpu"
    tokens, repeats, common = args.max_new_tokens, args.repeats, {"task": task, "device": gpu}
    fast, loop = FastGreedy(model, graphs=device != "cpu"), FastGreedy(model, graphs=False)

    def generate() -> Any:
        with torch.inference_mode():
            return model.generate(**inputs, max_new_tokens=tokens)

    def ours(decoder: FastGreedy, n: int = tokens) -> Any:
        return decoder.generate(**inputs, max_new_tokens=n)

    generate()  # warm-up
    reserved = held_mb()
    first_ms, _ = timed(lambda: ours(fast), 1)  # captures the graphs
    graphs_mb = held_mb() - reserved  # caches, buffers and the graphs' memory pool
    generate_ms, reference = timed(generate, repeats)
    loop_ms, _ = timed(lambda: ours(loop), repeats)
    fast_ms, fast_ids = timed(lambda: ours(fast), repeats)
    timed(lambda: ours(fast, 2), 1)  # captures the graphs for 2 new tokens
    two_ms, _ = timed(lambda: ours(fast, 2), repeats)
    with torch.inference_mode():
        encode_ms, _ = timed(lambda: encode(model, inputs), repeats)
    prompt = 1 if task == "vqa" or "input_ids" not in inputs else inputs["input_ids"].shape[1] - 1
    new, fast_new = reference.shape[1] - prompt, fast_ids.shape[1] - prompt
    emit(rows, figure="generate_ms", ms=generate_ms, max_new_tokens=tokens, **common)
    emit(rows, figure="static_cache_no_graphs_ms", ms=loop_ms, path=loop.last_path, **common)
    emit(rows, figure="fast_ms", ms=fast_ms, path=fast.last_path, **common)
    emit(rows, figure="fast_first_call_ms", ms=first_ms, reserved_mb_added=graphs_mb, **common)
    emit(rows, figure="encoders_ms", ms=encode_ms, **common)
    emit(rows, figure="fast_ms_per_token", ms=(fast_ms - two_ms) / max(1, fast_new - 2), **common)
    equal = bool(torch.equal(reference, fast_ids))
    emit(rows, figure="ids", equal=equal, new_tokens=new, fast_new_tokens=fast_new,
         **({} if equal else divergence(model, inputs, reference, fast_ids)), **common)  # fmt: skip


def table(rows: list[dict]) -> str:
    by = {(r["task"], r["figure"]): r for r in rows}
    header = ["task", "generate ms", "static cache, no graphs ms", "fast ms", "speed-up", "first fast call ms",
              "encoders ms", "fast ms per token", "new tokens", "ids equal"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in REPOS:
        if (task, "ids") not in by:
            continue
        ms = {f: by[(task, f)]["ms"] for f in ("generate_ms", "static_cache_no_graphs_ms", "fast_ms",
                                                "fast_first_call_ms", "encoders_ms", "fast_ms_per_token")}  # fmt: skip
        ids = by[(task, "ids")]
        lines.append(f"| {task} | {ms['generate_ms']:.1f} | {ms['static_cache_no_graphs_ms']:.1f} | "
                     f"{ms['fast_ms']:.1f} | {ms['generate_ms'] / ms['fast_ms']:.1f}× | {ms['fast_first_call_ms']:.1f} | "
                     f"{ms['encoders_ms']:.1f} | {ms['fast_ms_per_token']:.2f} | {ids['new_tokens']} | {'yes' if ids['equal'] else 'no'} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny checkpoints on the CPU, no graphs (smoke run)"
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--tasks", default="caption,vqa")
    args = parser.parse_args(argv)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="explore-blip-") as folder:
        for task in args.tasks.split(","):
            bench(task, args, device, Path(folder), rows)
    print("\n" + table(rows), flush=True)


if __name__ == "__main__":
    main()
