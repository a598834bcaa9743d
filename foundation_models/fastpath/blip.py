"""Fast greedy decoding for BLIP captioning and VQA: a static KV cache and CUDA-graph replay, token by token.

``model.generate`` is bound by the CPU, not the GPU: each new token costs far more Python and kernel launches
than GPU work (docs/benchmarks.md). ``FastGreedy.generate`` returns the token ids that
``model.generate(**inputs, max_new_tokens=N)`` returns, in two CUDA graphs per input signature:

1. The first new token (``_first``): the vision encoder (for VQA, then the question through the text encoder with
   cross-attention to the image), then the decoder's prompt into a ``StaticCache`` for self-attention and a
   second one for the cross-attention keys and values (computed here, reused by every later step; the two make
   an ``EncoderDecoderCache``). The inputs are what transformers 5.24's ``BlipForConditionalGeneration.generate``
   and ``BlipForQuestionAnswering.generate`` make: ``[DEC]`` as the prompt (a captioning prompt gets ``[DEC]``
   first and loses its trailing ``[SEP]``), eos = ``sep_token_id``, pad = ``pad_token_id``, position ids and
   padding from the attention mask.
2. Each later token (``_step``): one decoder step of fixed shapes and addresses. The cache slot, the position and
   the 4-D mask over the whole static length come from device tensors (the cache's ``cumulative_length``), and the
   step ends by writing the argmax (pad once a row has met eos) into the input of the next one.

Graphs are captured on a signature's first call (batch, image size, question length rounded up to
``QUESTION_BUCKET`` tokens, prompt length, length limit; at most ``MAX_GRAPHS`` kept, the oldest dropped) after an
eager run on a side stream, and replayed from then on. The padding that rounds a question up is masked in the text
encoder and, through a pre-hook (``blip_inputs.cross_attention_mask``), in the decoder's cross-attention.
Whether any row is still going is read back one step late, so the CPU keeps a step queued instead of waiting.

Only plain greedy decoding goes this way (``plain_greedy``): any other generation config, an input it does not
know, a capture that fails (logged once) or meets background GPU work, a model off CUDA: ``model.generate``.
``graphs=False`` runs the same static-cache loop eagerly on any device (the tests' CPU path). Attention over the
static length is generate's arithmetic (the slots after the current one weigh exactly 0) in another summation
order, so the ids could differ where two logits tie to within rounding.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .blip_inputs import Inputs, additive, cross_attention_mask, plain_greedy
from .graphs import WeightWatch
from .memory import reason
from .torch_state import capture_allowed

log = logging.getLogger(__name__)

MAX_GRAPHS = 16  # input signatures kept (VQA: question bucket and limit); the oldest is dropped first
# VQA questions are padded to a multiple of this many tokens so that questions of different lengths share one
# signature: each new one costs a capture and its graph memory.
QUESTION_BUCKET = 16
INPUTS = {"pixel_values", "input_ids", "attention_mask", "interpolate_pos_encoding"}


@dataclass
class Buffers:
    """One input signature's inputs, caches and step state, at fixed addresses (the graphs read and write them)."""

    inputs: Inputs
    cache: Any  # EncoderDecoderCache(StaticCache, StaticCache)
    valid: Any  # (B, L) bool: False at prompt padding; L = prompt + new tokens - 1
    slots: Any  # (L,) 0..L-1
    tokens: Any  # (B, 1) the token the next step feeds
    positions: Any  # (B, 1) its position id
    ids: Any  # (B, N) the new ids
    unfinished: Any  # (B,) bool
    alive: Any  # () bool: any row unfinished
    encoder_states: Any = None  # (B, E, D), allocated on the first run
    flags: Any = None  # CUDA: (2,) pinned bool, ``alive`` read back one step late
    events: Any = None
    first: Any = None  # CUDA graph of ``FastGreedy._first``
    step: Any = None  # CUDA graph of ``FastGreedy._step``

    @property
    def prompt_length(self) -> int:
        return self.inputs.prompt.shape[1]

    def load(self, x: Inputs) -> None:
        for static, value in zip(self.inputs.tensors(), x.tensors()):
            static.copy_(value)
        self.valid[:, : self.prompt_length].copy_(x.prompt_mask)


class FastGreedy:
    """Greedy decoding of a ``BlipForConditionalGeneration`` or ``BlipForQuestionAnswering`` with the ids of its
    ``generate``. Not thread-safe: one caller at a time (``Blip`` holds a lock)."""

    def __init__(self, model: Any, graphs: bool = True, max_graphs: int = MAX_GRAPHS):
        self.model = model
        self.graphs = graphs
        self.max_graphs = max_graphs
        self.buffers: OrderedDict[tuple, Buffers] = OrderedDict()
        self.failed: set[tuple] = set()  # signatures whose capture failed: generate() serves them
        self.last_path = ""  # "fast" or "generate": what the last call used (tests, benchmarks)
        self._pool: Any = None
        self._stream: Any = None
        self._weights = WeightWatch(model)
        self._warned = False
        self._cross_mask = cross_attention_mask(model) if self._vqa else None
        self._cache_arg = cache_argument(model.text_decoder)
        self.fallback: str | None = None  # why graph capture failed (then generate() answers); shown to users
        self.bucket = QUESTION_BUCKET if self._cross_mask is not None else 1  # questions padded to this

    def clear(self) -> None:
        """Drop graphs and caches (they hold device addresses: call before the model moves)."""
        self.buffers.clear()
        self.failed.clear()
        self._pool = self._stream = None

    def generate(self, *, max_new_tokens: int, **inputs: Any) -> Any:
        """``model.generate(**inputs, max_new_tokens=max_new_tokens)``, fast where it can be."""
        import torch

        with torch.inference_mode():
            if self._supported(inputs, max_new_tokens):
                if self._weights.moved():  # graphs read the weights at fixed addresses
                    self.clear()
                ids = self._decode(self._inputs(**inputs), max_new_tokens)
                if ids is not None:
                    self.last_path = "fast"
                    return ids
            self.last_path = "generate"
            return self.model.generate(**inputs, max_new_tokens=max_new_tokens)

    # -- what generate() would compute from ---------------------------------------------------------------------

    @property
    def _vqa(self) -> bool:
        return hasattr(self.model, "text_encoder")

    def _supported(self, inputs: dict[str, Any], max_new_tokens: int) -> bool:
        import torch

        text = self.model.config.text_config
        pixels = inputs.get("pixel_values")
        if set(inputs) - INPUTS or not isinstance(pixels, torch.Tensor) or max_new_tokens < 1:
            return False
        if text.sep_token_id is None or text.pad_token_id is None:
            return False
        if self.graphs and pixels.device.type != "cuda":
            return False
        ids = inputs.get("input_ids")
        if self._vqa and ids is None:
            return False
        prompt = 1 if self._vqa or ids is None else len(ids[0]) - 1
        if prompt < 1 or prompt + max_new_tokens - 1 > text.max_position_embeddings:
            return False
        return plain_greedy(self.model.text_decoder.generation_config)

    def _inputs(self, pixel_values: Any, input_ids: Any = None, attention_mask: Any = None,
                interpolate_pos_encoding: bool = False) -> Inputs:  # fmt: skip
        """BlipForConditionalGeneration.generate's and BlipForQuestionAnswering.generate's preparation."""
        import torch

        text, device, batch = self.model.config.text_config, pixel_values.device, pixel_values.shape[0]
        question = question_mask = cross_mask = mask = None
        if self._vqa:  # the question goes through the text encoder; the decoder starts from [DEC] alone
            question = torch.as_tensor(input_ids, device=device).long()
            given = attention_mask if attention_mask is not None else torch.ones_like(question)
            given = given.to(device=device, dtype=torch.bool)
            length = question.shape[1]
            bucket = max(length, min(-(-length // self.bucket) * self.bucket, text.max_position_embeddings))
            question = torch.nn.functional.pad(question, (0, bucket - length), value=text.pad_token_id)
            given = torch.nn.functional.pad(given, (0, bucket - length), value=False)
            question_mask = additive(given, self.model.dtype)[:, None, None]
            # generate() lets the decoder see every position of the question it gets, the question's own padding
            # included: only the positions added here are hidden from it
            seen = (torch.arange(bucket, device=device) < length).expand(batch, bucket)
            cross_mask = additive(seen, self.model.dtype)[:, None, None]
            start = self.model.decoder_start_token_id
            prompt = torch.full((batch, 1), start, dtype=torch.long, device=device)
        elif input_ids is None:  # [bos, eos] less its last token
            prompt = torch.full((batch, 1), text.bos_token_id, dtype=torch.long, device=device)
        else:  # a text prompt: bos first, the trailing [SEP] dropped
            prompt = torch.as_tensor(input_ids, device=device).long().clone()
            prompt[:, 0] = text.bos_token_id
            prompt = prompt[:, :-1]
            mask = attention_mask[:, :-1] if attention_mask is not None else None
        if mask is None and text.pad_token_id != text.sep_token_id:  # generate's inference: pads are padding
            mask = prompt.ne(text.pad_token_id)
        elif mask is None:
            mask = torch.ones_like(prompt)
        mask = mask.to(device=device, dtype=torch.bool)
        positions = (mask.long().cumsum(-1) - 1).masked_fill(~mask, 0)
        interpolate = bool(interpolate_pos_encoding)
        return Inputs(pixel_values, question, question_mask, cross_mask, prompt, mask, positions, interpolate)

    def _encoder_length(self, x: Inputs) -> int:
        if x.question is not None:
            return x.question.shape[1]
        vision, (height, width) = self.model.config.vision_config, x.pixels.shape[-2:]
        if not x.interpolate:
            height = width = vision.image_size
        return (height // vision.patch_size) * (width // vision.patch_size) + 1  # patches and [CLS]

    # -- decoding ------------------------------------------------------------------------------------------------

    def _decode(self, x: Inputs, max_new_tokens: int) -> Any:
        """The ids (prompt and new tokens), or None when this call must go to generate()."""
        key = (*(tuple(t.shape) for t in x.tensors()), x.interpolate, max_new_tokens, x.pixels.device,
               x.pixels.dtype)  # fmt: skip
        if key in self.failed:
            return None
        b = self._buffers_for(key, x, max_new_tokens)
        b.load(x)
        steps, done = max_new_tokens - 1, 0
        if not self.graphs:
            self._first(b)
        elif b.first is None:
            if not self._capture(key, b, steps):
                return None
            done = min(1, steps)  # the capture's warm-up ran the first step
        else:
            b.first.replay()
        self._loop(b, b.step.replay if b.step is not None else lambda: self._step(b), done, steps)
        return self._result(b, max_new_tokens)

    def _buffers_for(self, key: tuple, x: Inputs, max_new_tokens: int) -> Buffers:
        import torch
        from transformers import EncoderDecoderCache, StaticCache

        if key in self.buffers:
            self.buffers.move_to_end(key)
            return self.buffers[key]
        while len(self.buffers) >= self.max_graphs:
            self.buffers.popitem(last=False)
        (batch, length), device = x.prompt.shape, x.prompt.device
        total = length + max_new_tokens - 1  # the last new token is never fed back
        config = self.model.text_decoder.config
        cache = EncoderDecoderCache(StaticCache(config=config, max_cache_len=total),
                                    StaticCache(config=config, max_cache_len=self._encoder_length(x)))  # fmt: skip
        long = {"dtype": torch.long, "device": device}
        b = Buffers(
            inputs=x.clone(), cache=cache, valid=torch.ones(batch, total, dtype=torch.bool, device=device),
            slots=torch.arange(total, device=device), tokens=torch.zeros(batch, 1, **long),
            positions=torch.zeros(batch, 1, **long), ids=torch.zeros(batch, max_new_tokens, **long),
            unfinished=torch.ones(batch, dtype=torch.bool, device=device),
            alive=torch.ones((), dtype=torch.bool, device=device),
        )  # fmt: skip
        if device.type == "cuda":
            b.flags = torch.ones(2, dtype=torch.bool, pin_memory=True)
            b.events = [torch.cuda.Event(), torch.cuda.Event()]
        self.buffers[key] = b
        return b

    def _first(self, b: Buffers) -> None:
        """The encoders and the prompt: fills both caches and picks the first new token (the first graph)."""
        x, model = b.inputs, self.model
        states = model.vision_model(pixel_values=x.pixels, interpolate_pos_encoding=x.interpolate)[0]
        if x.question is not None:  # cross-attention to the image: all ones, the same as no mask
            states = model.text_encoder(input_ids=x.question, attention_mask=x.question_mask,
                                        encoder_hidden_states=states, return_dict=False)[0]  # fmt: skip
        if b.encoder_states is None:
            b.encoder_states = states.new_empty(states.shape)
        b.encoder_states.copy_(states)
        b.cache.reset()  # zeroes the caches in place; cross-attention is computed again
        b.unfinished.fill_(True)
        b.ids.fill_(model.config.text_config.pad_token_id)
        rows = b.slots[: b.prompt_length]
        allowed = b.valid[:, None, :] & (b.slots[None, :] <= rows[:, None])  # (B, P, L): causal, no padding
        logits = self._forward(b, x.prompt, x.positions, allowed)
        b.positions.copy_(x.positions[:, -1:] + 1)
        self._advance(b, logits, b.slots[:1])

    def _step(self, b: Buffers) -> None:
        """One new token (the step graph). Reads and writes only ``b``'s tensors, in place."""
        slot = b.cache.self_attention_cache.layers[0].cumulative_length  # where this token's keys go
        index = (slot - (b.prompt_length - 1)).view(1)  # which new token it yields
        allowed = (b.valid & (b.slots <= slot))[:, None, :]  # (B, 1, L)
        logits = self._forward(b, b.tokens, b.positions, allowed)
        b.positions.add_(1)
        self._advance(b, logits, index)

    def _forward(self, b: Buffers, ids: Any, positions: Any, allowed: Any) -> Any:
        mask = additive(allowed, b.encoder_states.dtype)[:, None]  # 4-D, as create_causal_mask makes it
        if self._cross_mask is not None:  # the decoder's cross-attentions read it (cross_attention_mask)
            self._cross_mask.value = b.inputs.cross_mask
        try:
            out = self.model.text_decoder(input_ids=ids, position_ids=positions, attention_mask=mask,
                                          encoder_hidden_states=b.encoder_states, **{self._cache_arg: b.cache},
                                          use_cache=True, logits_to_keep=1, return_dict=True)  # fmt: skip
        finally:
            if self._cross_mask is not None:
                self._cross_mask.value = None
        return out.logits[:, -1]

    def _advance(self, b: Buffers, logits: Any, index: Any) -> None:
        """generate()'s greedy step: argmax of the float32 logits, pad for finished rows, eos finishes a row."""
        text = self.model.config.text_config
        tokens = logits.float().argmax(-1).where(b.unfinished, text.pad_token_id)
        b.unfinished.logical_and_(tokens != text.sep_token_id)
        b.alive.copy_(b.unfinished.any())
        b.tokens.copy_(tokens[:, None])
        b.ids.index_copy_(1, index, tokens[:, None])

    def _loop(self, b: Buffers, run: Any, start: int, steps: int) -> None:
        """Steps ``start`` to ``steps - 1``, until every row has met eos. On CUDA that is seen one step late (the
        extra step writes only pad): the CPU keeps a step queued ahead of the GPU instead of waiting for it."""
        if b.flags is None:
            for _ in range(start, steps):
                if not bool(b.alive):
                    return
                run()
            return
        pending = None
        for step in range(start, steps):
            run()
            slot = step % 2
            b.flags[slot].copy_(b.alive, non_blocking=True)
            b.events[slot].record()
            if pending is not None:
                b.events[pending].synchronize()
                if not bool(b.flags[pending]):
                    return
            pending = slot

    def _result(self, b: Buffers, max_new_tokens: int) -> Any:
        """Prompt and new ids, cut where generate() stops: once every row has met eos."""
        import torch

        ids = b.ids.cpu()
        hit = ids == self.model.config.text_config.sep_token_id
        first = torch.where(hit.any(1), hit.int().argmax(1), max_new_tokens - 1)
        return torch.cat([b.inputs.prompt, b.ids[:, : int(first.max()) + 1]], dim=1)

    # -- CUDA graphs ---------------------------------------------------------------------------------------------

    def _capture(self, key: tuple, b: Buffers, steps: int) -> bool:
        """Run the first token and the first step on a side stream (this call's answer so far, and the warm-up),
        then capture both; False when that fails or background GPU work is under way (no capture beside it:
        torch_state.py): this call then goes to generate()."""
        with capture_allowed() as allowed:
            return allowed and self._capture_now(key, b, steps)

    def _capture_now(self, key: tuple, b: Buffers, steps: int) -> bool:
        import torch

        try:
            device = b.ids.device
            if self._stream is None or self._stream.device != device:
                self._stream = torch.cuda.Stream(device)
            current = torch.cuda.current_stream(device)
            self._stream.wait_stream(current)
            with torch.cuda.stream(self._stream):
                self._first(b)
                if steps > 0:
                    self._step(b)
            b.first = self._graph(lambda: self._first(b))
            b.step = self._graph(lambda: self._step(b)) if steps > 0 else None
            current.wait_stream(self._stream)
        except torch.OutOfMemoryError:  # the model manager frees memory and calls again
            self.buffers.pop(key, None)
            raise
        except Exception as exc:  # this signature goes to generate() from now on
            self.buffers.pop(key, None)
            self.failed.add(key)
            if not self._warned:
                self._warned = True
                self.fallback = (
                    f"CUDA graph capture of the BLIP decoder failed, so generate() answers: {reason(exc)}"
                )
                log.warning("%s", self.fallback)
            return False
        return True

    def _graph(self, run: Any) -> Any:
        import torch

        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=self._stream, capture_error_mode="thread_local"):
            run()
        self._pool = graph.pool()  # one pool for all: the graphs never run at the same time
        return graph


def cache_argument(decoder: Any) -> str:
    """The name the installed transformers gives the decoder's cache argument: ``cache`` from 5.25 on (the
    old name is deprecated there), ``past_key_values`` before. Passed under the wrong name, it is swallowed by
    ``**kwargs`` and each step attends to its own token only."""
    import inspect

    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
