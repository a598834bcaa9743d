"""Tiny text-embedding repositories: a 2-layer BERT with a WordPiece vocabulary, as the hub's sentence encoders.

Hub layout: config.json, model.safetensors, vocab.txt, tokenizer.json, tokenizer_config.json. The vectors are
noise: these checkpoints test the plumbing (loading, pooling, storing, searching), not retrieval quality.
"""

from __future__ import annotations

from pathlib import Path

from ._common import save_quietly, seeded
from ._tokenizers import blip_vocab, write_vocab_txt

MULTILINGUAL_E5_SMALL = "intfloat/multilingual-e5-small"
ALL_MINILM_L6_V2 = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_EMBEDDING_REPOS = (MULTILINGUAL_E5_SMALL, ALL_MINILM_L6_V2)


def text_embedding_builder(repo_id: str):  # type: ignore[no-untyped-def]
    def build(dest: Path) -> None:
        from transformers import BertConfig, BertModel, BertTokenizer

        vocab = [t for t in blip_vocab() if t not in ("[DEC]", "[ENC]")]
        tokenizer = BertTokenizer(
            vocab=str(write_vocab_txt(dest, vocab)), do_lower_case=True, model_max_length=128
        )
        tokenizer.save_pretrained(dest)
        config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, max_position_embeddings=128, pad_token_id=0)  # fmt: skip
        with seeded(repo_id):
            model = BertModel(config, add_pooling_layer=False)
        save_quietly(model, dest)

    build.__doc__ = f"{repo_id}: BertModel (mean-pooled sentence embeddings)."
    return build
