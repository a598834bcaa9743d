"""``finetune``: teach a local chat model the tools on traces, with peft adapters trained by TRL's SFTTrainer.

Methods: ``lora`` (low-rank adapters on every linear layer), ``qlora`` (the same over an int4 base, bitsandbytes,
CUDA), ``prefix`` (prefix tuning: trained key/value prefixes in every layer) and ``freeze`` (the last layers trained,
the rest frozen). Precision follows the device: bfloat16 where the GPU has it, else float16 with float32 trainable
weights, float32 on CPU. What is trained is held in one dtype rule (``trainable_dtype``), so neither "Only Tensors of
floating point and complex dtype can require gradients" nor "self and mat2 must have the same dtype" can happen.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..brain.base import BrainConfig
from ..brain.hf_local import keep_prefix_in_generate, load_chat_model, match_adapter_dtype
from ..errors import OrchestratorError
from .score import tool_call_accuracy
from .traces import read_traces

log = logging.getLogger(__name__)
METHODS = ("lora", "qlora", "prefix", "freeze")
DEFAULT_LR = {"lora": 2e-4, "qlora": 2e-4, "prefix": 1e-2, "freeze": 2e-5}


class FinetuneError(OrchestratorError):
    """A fine-tuning run that cannot start; the message says what to do."""


@dataclass(frozen=True)
class FinetuneConfig:
    base: str  # hub id or folder of the chat model (the part after hf:)
    data: Path
    method: str
    out: Path
    eval_data: Path | None = None  # held-out traces; None: split ``held_out`` of ``data`` off
    held_out: float = 0.1
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float | None = None  # None: DEFAULT_LR[method]
    batch_size: int = 4
    grad_accum: int = 1
    lora_r: int = 8
    lora_alpha: int = 16
    prefix_tokens: int = 16
    freeze_layers: int = 3  # freeze: how many of the last decoder layers are trained
    packing: bool = False
    gradient_checkpointing: bool = False
    max_length: int = 2048
    resume: bool = False
    save_steps: int = 200
    seed: int = 0
    device: str | None = None  # None: cuda, then mps, then cpu
    progress: bool = True


@dataclass(frozen=True)
class FinetuneResult:
    method: str
    train_examples: int
    held_out: int
    accuracy_before: float
    accuracy_after: float
    seconds: float
    examples_per_second: float
    out: str


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Score the base on the held-out traces, train, save the adapter (the whole model for freeze), score again."""
    if config.method not in METHODS:
        raise FinetuneError(f"Unknown --method {config.method}; use one of {', '.join(METHODS)}.")
    train_rows, held = _split(config)
    if config.gradient_checkpointing and not checkpointing(config):
        log.warning(
            "--gradient-checkpointing is ignored for freeze: it would slow training and save no memory"
        )
    tokenizer, model, device = _load(config)
    precision = precision_for(device)
    before = tool_call_accuracy(model, tokenizer, held)
    model = prepare(model, config.method, config, precision)
    started = time.perf_counter()
    trainer = _trainer(model, tokenizer, train_rows, config, precision, device)
    resume = config.resume and any((config.out / "checkpoints").glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - started
    model = trainer.model
    model.eval()
    if config.method != "freeze":
        keep_prefix_in_generate(match_adapter_dtype(model, precision["dtype"]))
    after = tool_call_accuracy(model, tokenizer, held)
    model.save_pretrained(config.out)
    tokenizer.save_pretrained(config.out)
    steps_done = trainer.state.global_step * config.batch_size * config.grad_accum
    result = FinetuneResult(config.method, len(train_rows), len(held), before, after, seconds,
                            steps_done / seconds if seconds else 0.0, str(config.out))  # fmt: skip
    meta = {**asdict(result), "base": config.base, "config": {k: str(v) for k, v in asdict(config).items()}}
    (config.out / "finetune.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return result


def precision_for(device: str) -> dict[str, Any]:
    """{"dtype": the base's dtype, "trainable": the dtype of what is trained, "bf16"/"fp16": Trainer flags}."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return {"dtype": torch.bfloat16, "trainable": torch.bfloat16, "bf16": True, "fp16": False}
    if device.startswith("cuda"):  # the gradient scaler unscales float32 weights only
        return {"dtype": torch.float16, "trainable": torch.float32, "bf16": False, "fp16": True}
    return {"dtype": torch.float32, "trainable": torch.float32, "bf16": False, "fp16": False}


def prepare(model: Any, method: str, config: FinetuneConfig, precision: dict[str, Any]) -> Any:
    """The model ready to train with ``method``: only the method's weights require gradients, all in one dtype."""
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model, prepare_model_for_kbit_training

    if method == "qlora":  # never requires_grad on int4 weights; norms to float32; inputs carry gradients
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    if method in ("lora", "qlora"):
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")  # fmt: skip
        model = get_peft_model(model, peft_config)
    elif method == "prefix":
        model = get_peft_model(
            model, PrefixTuningConfig(num_virtual_tokens=config.prefix_tokens, task_type="CAUSAL_LM")
        )
    else:
        _freeze_all_but_last(model, config.freeze_layers)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(precision["trainable"])
    if checkpointing(config) and method != "qlora":
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still get gradients
    return model


def checkpointing(config: FinetuneConfig) -> bool:
    """Whether the run checkpoints activations. Never for freeze: transformers then asks gradients of the inputs,
    so backward runs through every frozen layer too, 2.3x slower for a 7B at the same peak memory
    (``python -m benchmarks.finetune_gpu`` on an H100, docs/benchmarks.md)."""
    return config.gradient_checkpointing and config.method != "freeze"


def _freeze_all_but_last(model: Any, layers: int) -> None:
    """Train the last ``layers`` decoder layers; only floating-point weights can require gradients (int8 can't)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    blocks = list(decoder.layers)
    if not 1 <= layers <= len(blocks):
        raise FinetuneError(
            f"--freeze-layers {layers} must be between 1 and {len(blocks)} (the model's layers)."
        )
    for param in model.parameters():
        param.requires_grad_(False)
    for block in blocks[-layers:]:
        for param in block.parameters():
            if (
                param.is_floating_point() and type(param).__name__ == "Parameter"
            ):  # bitsandbytes Int8Params: no
                param.requires_grad_(True)


def _load(config: FinetuneConfig) -> tuple[Any, Any, str]:
    quant = "int4" if config.method == "qlora" else None
    tokenizer, model, device = load_chat_model(
        BrainConfig(kind="hf", model=config.base, quant=quant, device=config.device)
    )
    if not tokenizer.chat_template:
        raise FinetuneError(f"{config.base} has no chat template; fine-tune a chat (instruct) model.")
    return tokenizer, model, device


def _split(config: FinetuneConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    traces = read_traces(config.data)
    if config.eval_data is not None:
        return traces, read_traces(config.eval_data)
    rows = traces[:]
    random.Random(config.seed).shuffle(rows)
    held = max(1, round(len(rows) * config.held_out)) if len(rows) > 1 else 0
    return rows[held:], rows[:held]


def prompt_completions(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """A trace as TRL's conversational prompt-completion examples, one per assistant message (its tool calls or its
    reply) after everything before it: the loss falls on what the assistant writes, never on a tool's answer (a
    new image name the model cannot know, which it would otherwise learn to invent)."""
    messages = trace["messages"]
    return [
        {"prompt": messages[:i], "completion": [m], "tools": trace["tools"]}
        for i, m in enumerate(messages)
        if m["role"] == "assistant" and i > 0
    ]


def _trainer(model: Any, tokenizer: Any, rows: list[dict[str, Any]], config: FinetuneConfig,
             precision: dict[str, Any], device: str) -> Any:  # fmt: skip
    from datasets import Dataset, Features, Json, List
    from trl import SFTConfig, SFTTrainer

    from .progress import ProgressCallback

    features = Features({"prompt": List(Json()), "completion": List(Json()), "tools": List(Json())})
    dataset = Dataset.from_list([e for t in rows for e in prompt_completions(t)], features=features)
    args = SFTConfig(
        output_dir=str(config.out / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate or DEFAULT_LR[config.method],
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=0,
        logging_steps=5,
        save_steps=config.save_steps,
        save_total_limit=2,
        bf16=precision["bf16"],
        fp16=precision["fp16"],
        gradient_checkpointing=checkpointing(config) and config.method != "qlora",
        packing=config.packing,
        max_length=config.max_length,
        seed=config.seed,
        data_seed=config.seed,
        report_to=[],
        disable_tqdm=True,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        dataset_num_proc=None,
    )
    callbacks = [ProgressCallback(config.batch_size * config.grad_accum)] if config.progress else []
    return SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks
    )
