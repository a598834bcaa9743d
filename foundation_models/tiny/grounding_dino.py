"""Tiny IDEA-Research/grounding-dino-tiny: GroundingDINO with a Swin backbone and a BERT text encoder.

Hub layout: config.json, model.safetensors, preprocessor_config.json, vocab.txt, tokenizer.json,
tokenizer_config.json. The vocabulary keeps bert-base-uncased's ids for [CLS], [SEP], "." and "?",
which the model hard-codes to split the text prompt into phrases.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._common import save_quietly, seeded
from ._tokenizers import grounding_dino_vocab, write_vocab_txt

if TYPE_CHECKING:
    from transformers import GroundingDinoConfig

GROUNDING_DINO_TINY = "IDEA-Research/grounding-dino-tiny"
_MAX_TEXT_LEN = 256


def _grounding_dino_config(vocab_size: int) -> GroundingDinoConfig:
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(
        image_size=128,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8],
        window_size=4,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=_MAX_TEXT_LEN,
    )
    return GroundingDinoConfig(
        backbone_config=backbone.to_dict(),
        text_config=text.to_dict(),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # 1 breaks the bbox_embed weight tying in post_init
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        num_queries=20,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=_MAX_TEXT_LEN,
    )


def build_grounding_dino_tiny(dest: Path) -> None:
    """IDEA-Research/grounding-dino-tiny: GroundingDinoForObjectDetection, its tokenizer and image processor."""
    from transformers import BertTokenizer, GroundingDinoForObjectDetection, GroundingDinoImageProcessor

    vocab = grounding_dino_vocab()
    vocab_path = write_vocab_txt(dest, vocab)
    BertTokenizer(vocab=str(vocab_path), do_lower_case=True, model_max_length=_MAX_TEXT_LEN).save_pretrained(
        dest
    )
    GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 192}).save_pretrained(dest)
    with seeded(GROUNDING_DINO_TINY):
        model = GroundingDinoForObjectDetection(_grounding_dino_config(len(vocab)))
    save_quietly(model, dest)
