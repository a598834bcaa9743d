"""BLIP: image captioning (BlipForConditionalGeneration) and visual question answering (BlipForQuestionAnswering).

One card loads one of the two checkpoints; ``options.task`` says which (``caption`` or ``vqa``). On CUDA the
answer is decoded greedily with a static KV cache and CUDA-graph replay (fastpath/blip.py): the same ids as
``generate``, about one graph launch per token; with the fast path off (the card's ``fast: false``, or the
Orchestrator's) it calls ``generate`` instead.
"""

from __future__ import annotations

import threading
from typing import Any

from .family import Family, FastFacts, Files
from .fastpath.blip import FastGreedy

TASKS = ("caption", "vqa")


class Blip:
    """A BLIP model and its processor; ``caption`` or ``answer`` depending on the checkpoint's head."""

    def __init__(self, model: Any, processor: Any, task: str, max_new_tokens: int, fast: bool = True):
        self.model = model
        self.processor = processor
        self.task = task
        self.max_new_tokens = max_new_tokens
        self.fast = fast
        self.decoder = FastGreedy(model)  # its caches and graphs: one caller at a time, under the lock
        self._lock = threading.Lock()

    @property
    def fast_fallback(self) -> str | None:
        """Why the fast path is not used, when it fell back (the models panel and ``warmup`` show it)."""
        return self.decoder.fallback if self.fast else None

    def to(self, device: str) -> None:
        with self._lock:
            self.decoder.clear()  # graphs and caches hold the old device's addresses
            self.model.to(device)

    def caption(self, image: Any) -> str:
        """A short English description of the image."""
        return self._generate(self.processor(images=image, return_tensors="pt"))

    def answer(self, image: Any, question: str) -> str:
        """A short English answer to a question about the image."""
        return self._generate(self.processor(images=image, text=question, return_tensors="pt"))

    def _generate(self, inputs: Any) -> str:
        import torch

        inputs = inputs.to(self.model.device, self.model.dtype)  # casts only the floating tensors
        with torch.inference_mode():
            if self.fast:
                with self._lock:
                    tokens = self.decoder.generate(**inputs, max_new_tokens=self.max_new_tokens)
            else:
                tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        return self.processor.decode(tokens[0], skip_special_tokens=True).strip()


def load(ctx: Any) -> Blip:
    from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering, BlipProcessor

    task = ctx.options.get("task", "caption")
    if task not in TASKS:
        raise ValueError(f"card {ctx.card.name}: options.task must be one of {TASKS}, got {task!r}")
    path = ctx.checkpoint("model")
    model_class = BlipForConditionalGeneration if task == "caption" else BlipForQuestionAnswering
    model = model_class.from_pretrained(path, dtype=ctx.dtype).to(ctx.device).eval()
    processor = BlipProcessor.from_pretrained(path)
    max_new_tokens = int(ctx.options.get("max_new_tokens", 30))
    return Blip(model, processor, task, max_new_tokens, fast=ctx.fastpath.fast_for(ctx.options))


FAMILY = Family("blip", load, files=Files("transformers"), fast=FastFacts(decoder=True))
