"""What BLIP's ``generate`` computes from, for the fast greedy path (blip.py): whether a generation config is
plain greedy decoding, the prepared inputs of the first token, and the masks.

The question's padding must be hidden from the decoder's cross-attention, which transformers gives no mask:
``cross_attention_mask`` hooks one in.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# GenerationConfig fields, and the values at which generate() decodes plain greedy: no logits processor, no
# stopping criterion besides the length limit and eos, a tensor of ids for an answer (generation/utils.py).
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "do_sample": (None, False), "num_beams": (None, 1), "num_beam_groups": (None, 1),
    "num_return_sequences": (None, 1), "penalty_alpha": (None, 0), "constraints": (None,),
    "force_words_ids": (None,), "guidance_scale": (None, 1), "sequence_bias": (None,),
    "repetition_penalty": (None, 1), "encoder_repetition_penalty": (None, 1), "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "min_length": (None, 0),
    "min_new_tokens": (None, 0), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "remove_invalid_values": (None, False), "exponential_decay_length_penalty": (None,),
    "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "watermarking_config": (None,),
    "renormalize_logits": (None, False), "max_time": (None,), "stop_strings": (None,),
    "prompt_lookup_num_tokens": (None,), "assistant_early_exit": (None,), "use_mtp": (None, False),
    "token_healing": (None, False), "return_dict_in_generate": (None, False),
}  # fmt: skip


def plain_greedy(config: Any) -> bool:
    """Whether generate() with this GenerationConfig is argmax, token by token, and nothing else."""
    for name, neutral in NEUTRAL.items():
        value = getattr(config, name, None)
        if not any(value is n or (type(value) in (bool, int, float) and value == n) for n in neutral):
            return False
    return str(getattr(config.get_generation_mode(), "value", "")) == "greedy_search"


@dataclass
class Inputs:
    """What the first new token is computed from, prepared as generate() prepares it."""

    pixels: Any  # (B, 3, H, W)
    question: Any  # VQA: (B, Q) the question's ids, padded to its bucket; None for captions
    question_mask: Any  # VQA: (B, 1, 1, Q) additive, over the question's own padding and the bucket's
    cross_mask: Any  # VQA: (B, 1, 1, Q) additive, the decoder's: over the bucket's padding only
    prompt: Any  # (B, P) the decoder's prompt
    prompt_mask: Any  # (B, P) bool, False at padding
    positions: Any  # (B, P) the prompt's position ids
    interpolate: bool

    def tensors(self) -> list[Any]:
        return [v for v in self._values() if hasattr(v, "shape")]

    def clone(self) -> Inputs:
        return Inputs(*(v.clone() if hasattr(v, "shape") else v for v in self._values()))

    def _values(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]


class CrossMask:
    """The decoder's mask over the question for the call under way (None outside FastGreedy's calls)."""

    value: Any = None


_HOLDER = "_visual_orchestrator_cross_mask"


def cross_attention_mask(model: Any) -> CrossMask | None:
    """A holder whose mask the decoder's cross-attentions apply, made once per model; None where the modules are
    not there (then questions are not padded to buckets).

    transformers 5.24's ``BlipTextAttention`` hands its mask to ``BlipTextSelfAttention`` as ``attention_mask``,
    which a cross-attention replaces with its ``encoder_attention_mask`` argument, never given: a mask passed to
    ``text_decoder`` is dropped. A forward pre-hook on each cross-attention gives it the holder's mask. The holder
    is kept on the modules themselves, so a deep copy of the model gets hooks that read its own copy."""
    decoder = model.text_decoder
    if _HOLDER in decoder.__dict__:
        return decoder.__dict__[_HOLDER]
    layers = [m for n, m in decoder.named_modules() if n.endswith("crossattention.self")]
    if not layers:
        return None
    holder = CrossMask()
    for module in (decoder, *layers):
        object.__setattr__(module, _HOLDER, holder)
    for layer in layers:
        layer.register_forward_pre_hook(_give_cross_mask, with_kwargs=True)
    return holder


def _give_cross_mask(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    mask = module.__dict__[_HOLDER].value
    if mask is not None and kwargs.get("encoder_hidden_states") is not None:
        kwargs["encoder_attention_mask"] = mask
    return args, kwargs


def additive(allowed: Any, dtype: Any) -> Any:
    """0 where attention is allowed, the dtype's minimum elsewhere: the masks transformers makes for eager."""
    import torch

    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)
