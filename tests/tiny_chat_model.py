"""A tiny Qwen2 chat model built offline (TINY_NOTES §7), for tests of the ``hf:`` brain.

``build_tiny_chat_model(dest, completion)`` writes a byte-level BPE tokenizer, a chat template (by
default Qwen2.5-style, which renders ``tools``) and a 2-layer Qwen2 whose weights are set by hand so
that it answers every prompt with ``completion`` exactly: a ``<tool_call>`` block, a ReAct ``Action:``,
anything. Training a model to do that takes minutes on a busy CPU; setting the weights takes none.
Everything is saved in the hub layout and loaded back through ``AutoTokenizer`` /
``AutoModelForCausalLM`` by the brain, which renders the real prompt and generates for real.
"""

from __future__ import annotations

import re
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


IMAGE_NAME = r"image/[0-9a-f]{8}\.png"
CALL_PIECES = ('<tool_call>\n{"name": "', '", "arguments": ', "\n</tool_call>", "<tool_response>\n",
               "\n</tool_response>")  # fmt: skip


def build_word_tokenizer(corpus: list[str], fixed: list[str] = (), template: str = QWEN25_TEMPLATE) -> Any:
    """A tokenizer for ``corpus`` in which a word (with its leading space or punctuation, as Qwen2's pre-tokenizer
    splits text) is one token: BPE trained until no pair is left. Every image name of the corpus
    (``image/1a2b3c4d.png``), every string of ``fixed`` (text the prompts always hold: a line of the system prompt,
    a tool's spec, a tool's name) and every fixed piece of a tool call in the template is one added token. So a tool
    call is about ten tokens, copying an image name is copying one, and decoding gives the text back byte for
    byte. It loads back as transformers' Qwen2Tokenizer, which rebuilds the same pre-tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])  # fmt: skip
    bpe.decoder = decoders.ByteLevel()
    images = sorted({name for text in corpus for name in re.findall(IMAGE_NAME, text)})
    pieces = list(dict.fromkeys(["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<tools>",
                                 "</tools>", *CALL_PIECES, *fixed, *images]))  # fmt: skip
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    plain = []
    for text in corpus:  # what the added tokens leave is what BPE learns
        for piece in [*specials, *sorted(pieces, key=len, reverse=True)]:
            text = text.replace(piece, "\n")
        plain.append(text)
    trainer = trainers.BpeTrainer(vocab_size=100_000, min_frequency=1, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator(plain, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  clean_up_tokenization_spaces=False)  # fmt: skip
    tok.add_tokens([AddedToken(t, special=True) for t in specials])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in pieces])
    tok.chat_template = template
    return tok


def build_copy_chat_model(dest: Path, corpus: list[str], fixed: list[str] = (), seed: int = 0) -> Path:
    """Save in ``dest`` a 2-layer Qwen2 chat model (word-level tokenizer, ``build_word_tokenizer``) with the few
    circuits a pretrained model brings to fine-tuning, set by hand, and nothing it knows about tools.

    A random tiny model cannot learn to copy an unseen image name from 30 examples (it stays at 0%), and prefix
    tuning cannot add a circuit that is not there. So the residual stream has four 64-wide parts: A the token (a
    random unit vector; image names are mostly one shared "image name" feature), B the previous token, C what to
    say next (the LM head reads only C, against the token vectors of A) and D the last dozen tokens but image
    names. Layer 0: one head copies the previous token into B (a RoPE offset), one averages the recent tokens into
    D, two random ones write into C. Layer 1: one head attends to image names (never right after one) and copies
    them into C, so the base answers every prompt with an image name and no tool call; one queries with D and has
    nothing to attend to until a prefix or LoRA key is trained; two random ones write into C. The MLPs add
    nothing. Fine-tuning has to learn the call's format, which tool the words ask for, and when to copy."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = build_word_tokenizer(corpus, list(fixed))
    im_end, pad = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    size, heads, width = 256, 4, 64
    config = Qwen2Config(vocab_size=len(tok), hidden_size=size, intermediate_size=size, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
                         rope_theta=10000.0, tie_word_embeddings=False, eos_token_id=im_end,
                         pad_token_id=pad)  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    a, b, c, d = (slice(i * width, (i + 1) * width) for i in range(4))
    ident = width - 4  # A: token vector in 60 dims, the image-name feature in dim 60
    flag = 60
    theta = 10000.0 ** (-torch.arange(width // 2) / (width // 2))

    def rand(*shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    def orth(n: int) -> torch.Tensor:
        return torch.linalg.qr(rand(n, n))[0]

    vectors = rand(len(tok), ident)
    vectors /= vectors.norm(dim=1, keepdim=True)
    names = tok.convert_ids_to_tokens(range(len(tok)))
    image = torch.tensor([bool(re.fullmatch(IMAGE_NAME, t)) for t in names])
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
            layer.mlp.gate_proj.weight.copy_(rand(size, size, std=size**-0.5))
            layer.mlp.up_proj.weight.copy_(rand(size, size, std=size**-0.5))
        model.model.norm.weight.fill_(1.0)
        embed = model.model.embed_tokens.weight
        embed[:, :ident] = 16.0 * vectors  # the size RMSNorm gives a 256-wide stream
        embed[image, :ident] *= 0.3  # a name is mostly "an image name": which one matters only to copy it
        embed[image, flag] = 16.0
        model.lm_head.weight[:, c][:, :ident] = 4.0 * vectors  # logits of the token vectors in C

        def head(n: int) -> slice:
            return slice(n * width, (n + 1) * width)

        def copy_into(attn: Any, n: int, part: slice, gain: float) -> None:  # head n: value = A, out -> part
            attn.v_proj.weight[head(n), a] = torch.eye(width)
            attn.o_proj.weight[part, head(n)] = gain * torch.eye(width)

        def random_head(attn: Any, n: int, gain: float) -> None:  # reads everything, writes into C
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                proj.weight[head(n)] = rand(width, size, std=size**-0.5)
            attn.o_proj.weight[c, head(n)] = gain * orth(width)

        first, second = (layer.self_attn for layer in model.model.layers)
        # the previous token: fast RoPE pairs, the key rotated one position back
        fast = torch.arange(4)
        scale = (30.0 * width**0.5) ** 0.5
        first.q_proj.bias[head(0)][fast] = scale
        first.k_proj.bias[head(0)][fast] = scale * torch.cos(theta[fast])
        first.k_proj.bias[head(0)][fast + width // 2] = scale * torch.sin(theta[fast])
        copy_into(first, 0, b, 1.0)
        # the recent tokens: one slow pair, weights exp(5 cos(0.03 * distance))
        slow = 12
        scale = (5.0 * width**0.5) ** 0.5
        first.q_proj.bias[head(1)][slow] = scale
        first.k_proj.bias[head(1)][slow] = scale
        first.q_proj.bias[head(1)][24] = 1.0  # ... but image names: a name says nothing about what is asked
        first.k_proj.weight[head(1)][24, flag] = -10.0
        copy_into(first, 1, d, 1.0)
        for n in (2, 3):
            random_head(first, n, 0.25)
        # image names: the slowest pairs (no rotation to speak of), keyed on the image-name feature
        still = torch.arange(24, 32)
        second.q_proj.bias[head(0)][still] = 1.0
        second.q_proj.weight[head(0)] = rand(width, size, std=0.2 * size**-0.5)
        second.k_proj.weight[head(0)][still, flag] = 4.0 * width**0.5 / len(still)
        second.q_proj.weight[head(0)][still, flag] = -2.0 / 11.0  # never right after a name: no repeats
        copy_into(second, 0, c, 3.0)
        # the recent tokens as a query: no key or value of its own, so it says nothing until something to attend
        # to (a prefix, a LoRA key) is trained
        second.q_proj.weight[head(1)][:, d] = 4.0 * orth(width)
        second.o_proj.weight[c, head(1)] = orth(width)
        for n in (2, 3):
            random_head(second, n, 0.5)
    model.generation_config = GenerationConfig(eos_token_id=[im_end, pad], pad_token_id=pad, do_sample=False)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return Path(dest)
