"""Tiny BLIP repositories: image captioning and visual question answering.

Hub layout: config.json, model.safetensors, preprocessor_config.json, vocab.txt, tokenizer.json,
tokenizer_config.json. The vocabulary is BERT-shaped with BLIP's `[DEC]` start-of-decoding token.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._common import save_quietly, seeded
from ._tokenizers import blip_vocab, write_vocab_txt

if TYPE_CHECKING:
    from transformers import BlipConfig

BLIP_CAPTIONING = "Salesforce/blip-image-captioning-base"
BLIP_VQA = "Salesforce/blip-vqa-base"
_IMAGE_SIZE = 32


def _write_processor(dest: Path) -> list[str]:
    """Write vocab.txt, the tokenizer files and preprocessor_config.json; return the vocabulary."""
    from transformers import BertTokenizer, BlipImageProcessor

    vocab = blip_vocab()
    vocab_path = write_vocab_txt(dest, vocab)
    tokenizer = BertTokenizer(
        vocab=str(vocab_path), do_lower_case=True, bos_token="[DEC]", model_max_length=64
    )
    tokenizer.save_pretrained(dest)
    BlipImageProcessor(size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}).save_pretrained(dest)
    return vocab


def _blip_config(vocab: list[str]) -> BlipConfig:
    from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig

    vision = BlipVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=_IMAGE_SIZE,
        patch_size=8,
    )
    text = BlipTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        encoder_hidden_size=32,
        intermediate_size=37,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        bos_token_id=vocab.index("[DEC]"),
        eos_token_id=vocab.index("[SEP]"),
        sep_token_id=vocab.index("[SEP]"),
        pad_token_id=vocab.index("[PAD]"),
    )
    return BlipConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        projection_dim=16,
        image_text_hidden_size=16,
    )


def build_blip_captioning(dest: Path) -> None:
    """Salesforce/blip-image-captioning-base: BlipForConditionalGeneration."""
    from transformers import BlipForConditionalGeneration

    config = _blip_config(_write_processor(dest))
    with seeded(BLIP_CAPTIONING):
        model = BlipForConditionalGeneration(config)
    save_quietly(model, dest)


def build_blip_vqa(dest: Path) -> None:
    """Salesforce/blip-vqa-base: BlipForQuestionAnswering."""
    from transformers import BlipForQuestionAnswering

    config = _blip_config(_write_processor(dest))
    with seeded(BLIP_VQA):
        model = BlipForQuestionAnswering(config)
    save_quietly(model, dest)
