"""Tiny tokenizers written as the hub's own files: CLIP BPE (vocab.json, merges.txt) and BERT (vocab.txt).

The BPE merges are learnt here in plain Python: `tokenizers`' BpeTrainer breaks ties between equally
frequent pairs in hash-map order, which changes from one process to the next, so its output is not
reproducible.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from ._common import write_json

# Words the tiny tokenizers know whole; anything else falls back to letters (BPE) or ##letters (WordPiece).
WORDS = """
a an the of and with in on at to is it this that what how many there are where which who color
photo picture image painting drawing sketch cat dog bird horse person man woman child people face hand
car bus bike boat plane train road street city house building room table chair sofa bed window door
tree flower grass sky cloud sun moon water sea lake river mountain snow winter summer night day
red green blue yellow black white brown big small old new sitting standing running walking looking
make turn remove replace add change into like style background foreground object top left right
""".split()

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
_MAX_MERGES = 400


def _byte_alphabet() -> list[str]:
    from tokenizers.pre_tokenizers import ByteLevel

    return sorted(ByteLevel.alphabet())


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def learn_bpe_merges(words: list[str]) -> list[tuple[str, str]]:
    """Learn CLIP-style merges (last symbol carries `</w>`); ties go to the smallest pair, so it is reproducible."""
    counts = Counter(words)
    sequences = {tuple(w[:-1]) + (w[-1] + "</w>",): n for w, n in counts.items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < _MAX_MERGES:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, n in sequences.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        sequences = {_merge_pair(s, best): n for s, n in sequences.items()}
    return merges


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP vocabulary in the real file's order: bytes, bytes + `</w>`, merges, then the two specials."""
    alphabet = _byte_alphabet()
    merges = learn_bpe_merges(re.findall(r"[a-z]+", " ".join(WORDS)))
    tokens = alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges] + [CLIP_BOS, CLIP_EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_clip_tokenizer(folder: Path, model_max_length: int = 77) -> dict[str, int]:
    """Write vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json; return the vocab."""
    vocab, merges = clip_vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    specials = {"bos_token": CLIP_BOS, "eos_token": CLIP_EOS, "pad_token": CLIP_EOS, "unk_token": CLIP_EOS}
    write_json(folder / "special_tokens_map.json", specials)
    config = {
        **specials,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": model_max_length,
        "tokenizer_class": "CLIPTokenizer",
    }
    write_json(folder / "tokenizer_config.json", config)
    return vocab


def _wordpiece_tokens() -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return letters + ["##" + c for c in letters] + [w for w in WORDS if len(w) > 1]


def blip_vocab() -> list[str]:
    """A compact BERT vocabulary for BLIP: the specials, `[DEC]` (BLIP's bos), punctuation, digits, letters, words."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
    ascii_marks = [chr(c) for c in range(ord("!"), ord("@") + 1)]
    return specials + ascii_marks + _wordpiece_tokens()


def grounding_dino_vocab(size: int = 1030) -> list[str]:
    """A bert-base-uncased-shaped vocabulary: GroundingDINO hard-codes ids 101, 102, 1012 (".") and 1029 ("?")."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += _wordpiece_tokens()
    first_mark = 999  # "!" .. "?" sit at 999 .. 1029 in bert-base-uncased
    vocab += [f"[unused{i}]" for i in range(99, 99 + first_mark - len(vocab))]
    vocab += [chr(c) for c in range(ord("!"), ord("?") + 1)]
    if len(vocab) != size or vocab[1012] != "." or vocab[1029] != "?":
        raise AssertionError("GroundingDINO vocabulary layout is off")
    return vocab


def write_vocab_txt(folder: Path, vocab: list[str]) -> Path:
    """Write a WordPiece vocab.txt (one token a line, the line number is the id)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    return path
