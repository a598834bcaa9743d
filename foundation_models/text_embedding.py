"""Text embeddings for the knowledge base: a transformers encoder, mean pooling over the tokens, unit length.

Mean pooling is what sentence-transformers does for all-MiniLM-L6-v2 and what the E5 family was trained with,
so one plain ``AutoModel`` covers both without sentence-transformers. ``options.query_prefix`` and
``options.passage_prefix`` are the instruction prefixes a model expects (E5: ``"query: "`` / ``"passage: "``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .family import Family, Files


class TextEmbedder:
    """``encode(texts, kind)`` -> a float32 array (len(texts), dim) of unit vectors."""

    def __init__(self, model: Any, tokenizer: Any, name: str, options: Any):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name  # the checkpoint's hub id: a knowledge base records which model built it
        self.dim = int(model.config.hidden_size)
        self.prefixes = {
            "query": options.get("query_prefix", ""),
            "passage": options.get("passage_prefix", ""),
        }
        self.max_length = min(int(options.get("max_length", 256)), int(tokenizer.model_max_length))
        self.batch_size = int(options.get("batch_size", 64))
        self._lock = threading.Lock()

    def to(self, device: str) -> None:
        with self._lock:
            self.model.to(device)

    def encode(self, texts: Sequence[str], kind: str = "passage") -> Any:
        import numpy as np
        import torch

        prefix = self.prefixes[kind]
        out = []
        # Longest texts first, so each batch pads to a similar length (about a third less work on real chunks).
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode(), self._lock:
            for start in range(0, len(order), self.batch_size):
                batch = [prefix + texts[i] for i in order[start : start + self.batch_size]]
                inputs = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                        return_tensors="pt").to(self.model.device)  # fmt: skip
                hidden = self.model(**inputs).last_hidden_state
                mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
        vectors = np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
        result = np.empty_like(vectors)
        result[order] = vectors
        return result


def load(ctx: Any) -> TextEmbedder:
    from transformers import AutoModel, AutoTokenizer

    path = ctx.checkpoint("model")
    model = AutoModel.from_pretrained(path, dtype=ctx.dtype).to(ctx.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return TextEmbedder(model, tokenizer, ctx.card.checkpoints["model"], ctx.options)


FAMILY = Family("text_embedding", load, files=Files("transformers"))
