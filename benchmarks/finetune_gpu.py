"""Fine-tuning throughput and peak memory on a full-size random Qwen2.5-7B architecture (issue 24).

python -m benchmarks.finetune_gpu            # one H100: LoRA r=8 bf16, QLoRA int4, freeze last 3 layers; ~6 min
python -m benchmarks.finetune_gpu --tiny     # CPU smoke run of the same code (tests/test_finetune.py)

Each method runs twice on 1,024-token sequences at batch 4: our setup (peft + TRL's SFTTrainer, as
``orchestrator/finetune/train.py`` builds it) and a plain peft + ``transformers.Trainer`` at its defaults. Needs only
torch, transformers, peft, trl, datasets (and bitsandbytes for QLoRA): nothing of this repository's other
dependencies. Prints a table; writes ``$OUT/finetune_gpu.json`` when OUT is set.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from typing import Any

# Qwen2.5-7B-Instruct's published config.json (hardcoded: no download).
QWEN25_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0,
                 rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu")  # fmt: skip
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False)  # fmt: skip


def build(arch: dict[str, Any], method: str, dtype: Any, device: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**arch)
    if method != "qlora":
        with torch.device(device):
            return Qwen2ForCausalLM(config).to(dtype)
    import tempfile

    folder = tempfile.mkdtemp(prefix="qwen-random-")  # int4 loading goes through from_pretrained
    with torch.device("cpu"):
        Qwen2ForCausalLM(config).to(dtype).save_pretrained(folder)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return Qwen2ForCausalLM.from_pretrained(
        folder, quantization_config=quant, device_map={"": device}, dtype=dtype
    )


def adapt(model: Any, method: str, ours: bool, dtype: Any) -> Any:
    """The method's trainable weights. ``ours``: as train.py (one dtype); else peft's plain defaults."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=ours)
    if method in ("lora", "qlora"):
        targets = "all-linear" if ours else None  # peft's default for Qwen2: q_proj, v_proj
        model = get_peft_model(
            model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM")
        )
    else:  # freeze: the last 3 decoder layers
        for param in model.parameters():
            param.requires_grad_(False)
        for block in model.model.layers[-3:]:
            for param in block.parameters():
                if param.is_floating_point():
                    param.requires_grad_(True)
    if ours:
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.to(dtype)
    return model


def run_one(arch: dict[str, Any], method: str, ours: bool, steps: int, warmup: int, seq: int, batch: int,
            device: str) -> dict[str, Any]:  # fmt: skip
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    cuda = device.startswith("cuda")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float16 if cuda else torch.float32
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = adapt(build(arch, method, dtype, device), method, ours, dtype)
    ids = torch.randint(
        0, arch["vocab_size"], (batch * (steps + warmup), seq), generator=torch.Generator().manual_seed(0)
    )
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    common = dict(output_dir="/tmp/finetune-bench", per_device_train_batch_size=batch, max_steps=steps + warmup,
                  report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=not cuda)  # fmt: skip
    if ours:
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common, bf16=bf16, fp16=cuda and not bf16, gradient_checkpointing=method != "freeze",
                         max_length=seq, learning_rate=2e-4, dataset_kwargs={"skip_prepare_dataset": True})  # fmt: skip
        if method not in ("qlora", "freeze"):  # freeze never checkpoints (train.checkpointing)
            model.enable_input_require_grads()
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=_tokenizer(),
                             callbacks=[Clock()])  # fmt: skip
    else:  # plain Trainer at its defaults (fp32 autocast off, no checkpointing)
        trainer = Trainer(
            model=model, args=TrainingArguments(**common), train_dataset=data, callbacks=[Clock()]
        )
    error = None
    try:
        trainer.train()
    except torch.cuda.OutOfMemoryError as exc:
        error = f"out of memory: {str(exc)[:80]}"
    except RuntimeError as exc:
        error = f"{type(exc).__name__}: {str(exc)[:120]}"
    measured = times[warmup:]
    row = {"method": method, "setup": "peft+TRL (ours)" if ours else "peft+Trainer defaults", "batch": batch,
           "seq": seq, "examples_s": round(batch * len(measured) / sum(measured), 2) if measured and not error else None,
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None,
           "trainable_m": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 1),
           "error": error}  # fmt: skip
    del trainer, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return row


def _tokenizer() -> Any:
    """A one-word tokenizer: the data is token ids already, SFTTrainer only needs its pad token."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="<pad>")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny architecture on CPU (smoke test)")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--methods", default="lora,qlora,freeze")
    args = parser.parse_args(argv)
    import torch

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    arch, seq = (TINY, 64) if args.tiny else (QWEN25_7B, 1024)
    steps, warmup = (2, 1) if args.tiny else (args.steps, args.warmup)
    rows = []
    for method in args.methods.split(","):
        if method == "qlora" and device == "cpu":
            rows.append({"method": method, "setup": "-", "error": "QLoRA needs CUDA (bitsandbytes int4)"})
            continue
        for ours in (True, False):
            rows.append(run_one(arch, method, ours, steps, warmup, seq, 4, device))
            print(json.dumps(rows[-1]), flush=True)
    head = ("method", "setup", "examples/s", "peak GiB", "trainable M", "error")
    keys = ("method", "setup", "examples_s", "peak_gib", "trainable_m", "error")
    table = [head, *[tuple("" if r.get(k) is None else str(r.get(k)) for k in keys) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, line in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    if os.environ.get("OUT"):
        out = os.path.join(os.environ["OUT"], "finetune_gpu.json")
        with open(out, "w") as f:
            json.dump(
                {"device": name, "arch": "tiny" if args.tiny else "Qwen2.5-7B (random)", "rows": rows},
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
