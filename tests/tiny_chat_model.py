"""A tiny Qwen2 chat model built offline (TINY_NOTES §7), for tests of the ``hf:`` brain.

``build_tiny_chat_model(dest, completion)`` writes a byte-level BPE tokenizer, a chat template (by
default Qwen2.5-style, which renders ``tools``) and a 2-layer Qwen2 whose weights are set by hand so
that it answers every prompt with ``completion`` exactly: a ``<tool_call>`` block, a ReAct ``Action:``,
anything. Training a model to do that takes minutes on a busy CPU; setting the weights takes none.
Everything is saved in the hub layout and loaded back through ``AutoTokenizer`` /
``AutoModelForCausalLM`` by the brain, which renders the real prompt and generates for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

QWEN25_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
{{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- elif messages[0]['role'] == 'system' %}
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
{%- elif message.role == "assistant" %}
{{- '<|im_start|>' + message.role }}
{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
{{- '\\n<tool_call>\\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == "tool" %}
{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}
{%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""


def build_tokenizer(corpus: list[str], template: str = QWEN25_TEMPLATE, vocab_size: int = 400) -> Any:
    """A 400-token byte-level BPE tokenizer with Qwen's special tokens (<tool_call> tags stay in decoded text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AddedToken, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_tokens([AddedToken(t, special=True) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    tags = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<tools>", "</tools>")
    tok.add_tokens([AddedToken(t, special=False) for t in tags])
    tok.chat_template = template
    return tok


def build_tiny_chat_model(
    dest: Path,
    completion: str | list[str],
    template: str = QWEN25_TEMPLATE,
    seed: int = 0,
    hidden_size: int = 32,
) -> Path:
    """Save in ``dest`` a tiny chat model that answers any prompt with ``completion`` and stops.

    (bitsandbytes 4-bit needs ``hidden_size`` >= 64.)

    Its layers add nothing to the residual stream (zero output projections), so the next token depends
    on the current token alone; the LM head maps the last token of the generation prompt to
    ``completion`` (one added token) and that to ``<|im_end|>``. A list ``completion`` is its tokens, in order
    (each added, each distinct), for a reply that streams in several pieces.
    """
    import torch
    from transformers import AddedToken, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    pieces = [completion] if isinstance(completion, str) else list(completion)
    tok = build_tokenizer([template, "".join(pieces), "You are a helpful assistant. Draw a cat."], template)
    tok.add_tokens([AddedToken(piece, special=False, normalized=False) for piece in pieces])
    chain = tok.convert_tokens_to_ids(pieces)
    im_end, pad = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    trigger = tok(prompt, add_special_tokens=False)["input_ids"][-1]
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                         tie_word_embeddings=False, eos_token_id=im_end, pad_token_id=pad)  # fmt: skip
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        model.lm_head.weight.zero_()
        steps = [trigger, *chain, im_end]
        for previous, following in zip(steps, steps[1:]):
            model.lm_head.weight[following] = 20 * embed[previous] / embed[previous].norm()
    model.generation_config = GenerationConfig(eos_token_id=[im_end, pad], pad_token_id=pad, do_sample=False)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return Path(dest)


def build_random_chat_model(dest: Path, corpus: list[str], hidden_size: int = 64, seed: int = 0,
                            vocab_size: int = 400) -> Path:  # fmt: skip
    """Save in ``dest`` a randomly initialised 2-layer Qwen2 chat model (for fine-tuning tests): the tokenizer is
    trained on ``corpus`` (e.g. rendered traces) so the tokens fit the text it will learn."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer([QWEN25_TEMPLATE, *corpus], vocab_size=vocab_size)
    im_end, pad = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=im_end,
                         pad_token_id=pad)  # fmt: skip
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[im_end, pad], pad_token_id=pad, do_sample=False)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return Path(dest)
