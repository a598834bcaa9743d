"""Full-size random checkpoints in the hub layout (``DIR/org/name``), built from ``benchmarks/configs/``.

Speed and memory do not depend on weight values, so the benchmark runs the published architectures with
seeded random weights, saved as fp16 safetensors and loaded through the project's own loading code
(``--weights hub --model-dir DIR``). Tokenizers are the tiny ones from ``foundation_models/tiny`` padded to
the published vocabulary sizes; the controlnet_aux annotators are full-size already in the tiny builder.
Repositories that share files on the hub (the SD1.5 VAE and text encoder, the ControlNets' layout) are
hard links here. ``tiny=True`` writes the tiny checkpoints instead, for the CPU smoke test.

    python benchmarks/weights.py /tmp/weights          # size and time: docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).parent / "configs"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD_SHARED = ("vae", "text_encoder", "tokenizer")  # identical files in the base, inpainting and pix2pix repos
ANNOTATORS = "lllyasviel/Annotators"
LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"  # its shapes: rank 64 on the layers LCM-LoRA was trained on
BERT_VOCAB = 30522
STAMP = ".benchmark-weights"


def repos_of_cards(names: list[str] | None = None) -> list[str]:
    """Every checkpoint these cards (default: all) and their dependencies name, the SD1.5 base first."""
    from orchestrator.cards import load_cards

    cards = load_cards()
    chosen = [cards[n] for n in cards.with_dependencies(names or cards.names())]
    repos = [cards.groups[g].checkpoint for card in chosen for g in card.shares]
    repos += [repo for card in chosen for repo in card.checkpoints.values()]
    if any(r.startswith(("lllyasviel/sd-", "stable-diffusion-v1-5/", "timbrooks/")) for r in repos):
        repos.append(SD15)  # the others link its files
    unique = list(dict.fromkeys(repos))
    return sorted(unique, key=lambda r: (r != SD15, r))


def build_all(
    root: Path, device: str = "cuda", tiny: bool = False, names: list[str] | None = None
) -> dict[str, float]:
    """Build the cards' checkpoints under ``root`` (skipping finished ones); seconds per repository."""
    seconds: dict[str, float] = {}
    for repo in repos_of_cards(names):
        target = root / repo
        if (target / STAMP).is_file():
            continue
        started = time.perf_counter()
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        if tiny:
            from foundation_models.tiny import build_tiny_checkpoint

            build_tiny_checkpoint(repo, target)
        else:
            build_full(repo, target, root, device)
        (target / STAMP).write_text("full" if not tiny else "tiny")
        seconds[repo] = time.perf_counter() - started
        log.info("built %s in %.1f s", repo, seconds[repo])
    return seconds


def build_full(repo: str, target: Path, root: Path, device: str) -> None:
    import torch

    torch.manual_seed(0)
    source = CONFIGS / repo
    if repo == ANNOTATORS:
        from foundation_models.tiny.annotators import build_annotators

        build_annotators(target)
    elif repo == LCM_LORA:
        _build_lora(target, device)
    elif (source / "model_index.json").is_file():
        _build_pipeline(source, target, root, device)
    elif repo.startswith("lllyasviel/sd-controlnet-"):
        _build_controlnet(source, target, root, device)
    else:
        _build_transformers(repo, source, target, device)


def _build_pipeline(source: Path, target: Path, root: Path, device: str) -> None:
    """A diffusers pipeline folder: own UNet; VAE, text encoder and tokenizer built once, linked after."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from foundation_models.tiny._tokenizers import write_clip_tokenizer

    shutil.copytree(source, target, dirs_exist_ok=True)
    _diffusers_model(UNet2DConditionModel, target / "unet", device)
    base = root / SD15
    if target != base:
        for name in SD_SHARED:
            _link_tree(base / name, target / name)
        return
    _diffusers_model(AutoencoderKL, target / "vae", device)
    config = CLIPTextConfig.from_pretrained(target / "text_encoder")
    _save_transformers(CLIPTextModel, config, target / "text_encoder", device)
    write_clip_tokenizer(target / "tokenizer")


def _build_controlnet(source: Path, target: Path, root: Path, device: str) -> None:
    """The first ControlNet is built; the others have its weights (same architecture, same load work)."""
    from diffusers import ControlNetModel

    shutil.copy(source / "config.json", target / "config.json")
    built = [p for p in root.glob("lllyasviel/sd-controlnet-*") if (p / STAMP).is_file()]
    if built:
        for weights in built[0].glob("*.safetensors"):
            _link(weights, target / weights.name)
        return
    _diffusers_model(ControlNetModel, target, device)


def _build_lora(target: Path, device: str) -> None:
    """LCM-LoRA's layout and shapes (rank 64 on the SD1.5 UNet's attention, feed-forward, resnet and sampler
    layers), random fp16 matrices."""
    import torch
    from diffusers import UNet2DConditionModel

    from foundation_models.tiny.lora import random_lora, save_lora

    with torch.device("meta"):  # only the layer shapes are read
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS / SD15 / "unet"))
    save_lora(random_lora(unet, rank=64, seed_name=LCM_LORA, dtype=torch.float16, device=device), target)


def _build_transformers(repo: str, source: Path, target: Path, device: str) -> None:
    import transformers

    shutil.copytree(source, target, dirs_exist_ok=True)
    config = transformers.AutoConfig.from_pretrained(target)
    model_class = getattr(transformers, config.architectures[0])
    if repo.startswith("Salesforce/blip"):
        _write_bert_tokenizer(target, extra=["[DEC]", "[ENC]"], bos_token="[DEC]", model_max_length=512)
    elif repo.startswith("IDEA-Research/grounding-dino"):
        _write_bert_tokenizer(target, extra=[], model_max_length=512)
    _save_transformers(model_class, config, target, device)


def _diffusers_model(model_class: type, folder: Path, device: str) -> None:
    import torch

    config = model_class.load_config(folder)
    with torch.device(device):
        model = model_class.from_config(config)
    model.half().save_pretrained(folder, safe_serialization=True)


def _save_transformers(model_class: type, config: object, folder: Path, device: str) -> None:
    import torch

    with torch.device(device):
        model = model_class(config)
    model.half().save_pretrained(folder)


def _write_bert_tokenizer(folder: Path, extra: list[str], **kwargs: object) -> None:
    """A bert-base-uncased-shaped vocab.txt (specials at their real ids) and the tokenizer files."""
    from transformers import BertTokenizer

    from foundation_models.tiny._tokenizers import grounding_dino_vocab, write_vocab_txt

    vocab = grounding_dino_vocab()
    vocab += [f"[unused{1000 + i}]" for i in range(BERT_VOCAB - len(vocab))] + extra
    path = write_vocab_txt(folder, vocab)
    BertTokenizer(vocab=str(path), do_lower_case=True, **kwargs).save_pretrained(folder)


def _link_tree(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            _link(path, target / path.name)


def _link(source: Path, target: Path) -> None:
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


def size_gb(root: Path) -> float:
    seen, total = set(), 0
    for path in root.rglob("*"):
        if path.is_file():
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="where to write DIR/org/name")
    parser.add_argument("--device", default="cuda", help="where to initialise the weights (cuda is fastest)")
    parser.add_argument("--tiny", action="store_true", help="write the tiny test checkpoints instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seconds = build_all(args.root, args.device, args.tiny)
    print(json.dumps({"seconds": round(sum(seconds.values()), 1), "gb": round(size_gb(args.root), 2)}))


if __name__ == "__main__":
    main()
