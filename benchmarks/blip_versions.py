"""Issue 25: BLIP's fast path (static cache + CUDA graphs) on the transformers installed, against ``generate()``.

Full-size random BLIP captioning and VQA checkpoints (benchmarks/weights.py), fp16 on one GPU. For each task:
the median seconds of ``generate()`` and of the fast path over the same inputs, whether their token ids are
identical, and whether the fast path fell back (``Blip.fast_fallback``). Run it once per transformers version
(the lowest and the newest that pyproject.toml allows) to fill the table in docs/benchmarks.md.

    python -m benchmarks.blip_versions --model-dir /tmp/w [--repeats 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

CARDS = ["ImageCaptioning", "VisualQuestionAnswering"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="blip-")))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import transformers
    from PIL import Image

    from benchmarks.weights import build_all
    from orchestrator import Orchestrator
    from orchestrator.settings import Settings

    build_all(args.model_dir, "cuda", names=CARDS)
    settings = Settings.from_env(weights="hub", model_dir=args.model_dir, compile=False,
                                 session_root=Path(tempfile.mkdtemp(prefix="blip-sessions-")))  # fmt: skip
    orch = Orchestrator(",".join(f"{c}_cuda:0" for c in CARDS), settings=settings, brain="rules")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8))
    rows = {}
    for card, question in [("ImageCaptioning", None), ("VisualQuestionAnswering", "what color is the car?")]:
        with orch.manager.use(card) as blip:
            inputs = blip.processor(images=image, text=question, return_tensors="pt") if question else \
                blip.processor(images=image, return_tensors="pt")  # fmt: skip
            inputs = inputs.to(blip.model.device, blip.model.dtype)

            def plain(inputs=inputs, blip=blip):
                return blip.model.generate(**inputs, max_new_tokens=blip.max_new_tokens)

            def fast(inputs=inputs, blip=blip):
                return blip.decoder.generate(**inputs, max_new_tokens=blip.max_new_tokens)

            timings = {}
            outputs = {}
            with torch.inference_mode():
                for label, run in (("generate", plain), ("fast path", fast)):
                    outputs[label] = run()  # untimed: the fast path captures its graphs here
                    torch.cuda.synchronize()
                    seconds = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        run()
                        torch.cuda.synchronize()
                        seconds.append(time.perf_counter() - start)
                    timings[label] = statistics.median(seconds)
            same = torch.equal(outputs["generate"].cpu(), outputs["fast path"].cpu())
            rows[card] = {"generate_s": timings["generate"], "fast_s": timings["fast path"],
                          "speedup": timings["generate"] / timings["fast path"], "same_ids": same,
                          "fallback": blip.fast_fallback}  # fmt: skip
    print(
        f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}"
    )
    print(
        "| card | generate() s | fast path s | speed-up | same ids | fell back |\n|---|---:|---:|---:|---|---|"
    )
    for card, row in rows.items():
        print(f"| {card} | {row['generate_s']:.4f} | {row['fast_s']:.4f} | {row['speedup']:.1f}x | {row['same_ids']} "
              f"| {row['fallback'] or 'no'} |")  # fmt: skip
    result = {"transformers": transformers.__version__, "torch": torch.__version__, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
