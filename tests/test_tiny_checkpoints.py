"""Tiny checkpoints: hub layout, loading through the real classes, one inference each, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from PIL import Image

from foundation_models.tiny import TINY_BUILDERS, build_tiny_checkpoint

if TYPE_CHECKING:
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
INPAINTING = "stable-diffusion-v1-5/stable-diffusion-inpainting"
PIX2PIX = "timbrooks/instruct-pix2pix"
CONTROLNETS = [
    f"lllyasviel/sd-controlnet-{c}"
    for c in ("canny", "mlsd", "hed", "scribble", "openpose", "seg", "depth", "normal")
]
SD_SHARED_FOLDERS = ["vae", "text_encoder", "tokenizer"]  # the real repositories share these weights
SD_FILES = [
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
    "feature_extractor/preprocessor_config.json",
]
HF_FILES = ["config.json", "model.safetensors", "preprocessor_config.json"]
BERT_FILES = [*HF_FILES, "vocab.txt", "tokenizer_config.json"]
EXPECTED_FILES = {
    SD15: SD_FILES,
    INPAINTING: SD_FILES,
    PIX2PIX: SD_FILES,
    **{repo: ["config.json", "diffusion_pytorch_model.safetensors"] for repo in CONTROLNETS},
    "Salesforce/blip-image-captioning-base": BERT_FILES,
    "Salesforce/blip-vqa-base": BERT_FILES,
    "Intel/dpt-hybrid-midas": HF_FILES,
    "openmmlab/upernet-convnext-small": HF_FILES,
    "IDEA-Research/grounding-dino-tiny": BERT_FILES,
    "facebook/sam-vit-base": HF_FILES,
    "lllyasviel/Annotators": ["ControlNetHED.pth", "mlsd_large_512_fp32.pth", "body_pose_model.pth"],
    "intfloat/multilingual-e5-small": ["config.json", "model.safetensors", "tokenizer_config.json"],
    "sentence-transformers/all-MiniLM-L6-v2": ["config.json", "model.safetensors", "vocab.txt"],
    "latent-consistency/lcm-lora-sdv1-5": ["pytorch_lora_weights.safetensors"],
}
REPO_ROOT = Path(__file__).parents[1]
PROMPT = "a photo of a cat sitting on a table"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every tiny repository, built once for this module, at <root>/<owner>/<name>."""
    root = tmp_path_factory.mktemp("tiny-hub")
    for repo_id in TINY_BUILDERS:
        build_tiny_checkpoint(repo_id, root / repo_id)
    return root


@pytest.fixture(scope="module")
def sd15(tiny: Path) -> StableDiffusionPipeline:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny / SD15)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def photo() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _no_loading_problems(info: dict[str, list]) -> bool:
    return not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_every_requested_repository_has_a_builder() -> None:
    assert set(TINY_BUILDERS) == set(EXPECTED_FILES)


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, foundation_models.tiny; assert not {'torch', 'transformers', 'diffusers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_unknown_repository_names_it_and_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'no-such/model'.*stable-diffusion-v1-5/stable-diffusion-v1-5"):
        build_tiny_checkpoint("no-such/model", tmp_path)


@pytest.mark.parametrize("repo_id", sorted(EXPECTED_FILES))
def test_hub_layout(tiny: Path, repo_id: str) -> None:
    missing = [name for name in EXPECTED_FILES[repo_id] if not (tiny / repo_id / name).is_file()]
    assert missing == []


def test_sd_model_index_has_no_safety_checker(tiny: Path) -> None:
    index = json.loads((tiny / SD15 / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None]
    assert index["requires_safety_checker"] is False


def _assert_same_files(built: Path, reference: Path) -> None:
    files = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    for name in files:
        assert (built / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.parametrize("repo_id", [INPAINTING, PIX2PIX])
def test_sd_variants_share_vae_text_encoder_and_tokenizer_bytes(tiny: Path, repo_id: str) -> None:
    for folder in SD_SHARED_FOLDERS:
        _assert_same_files(tiny / repo_id / folder, tiny / SD15 / folder)
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert (tiny / repo_id / unet).read_bytes() != (tiny / SD15 / unet).read_bytes()


@pytest.mark.parametrize(
    "repo_id",
    [SD15, "IDEA-Research/grounding-dino-tiny", "lllyasviel/sd-controlnet-canny", "lllyasviel/Annotators"],
)
def test_building_twice_gives_identical_files(tiny: Path, tmp_path: Path, repo_id: str) -> None:
    build_tiny_checkpoint(repo_id, tmp_path)
    _assert_same_files(tmp_path, tiny / repo_id)


def test_a_fresh_process_learns_the_same_clip_tokenizer(tiny: Path, tmp_path: Path) -> None:
    """Tie-breaking in BPE training is where another process (another hash seed) could differ."""
    code = (
        "import sys; from pathlib import Path; from foundation_models.tiny._tokenizers import write_clip_tokenizer\n"
        "write_clip_tokenizer(Path(sys.argv[1]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, cwd=REPO_ROOT)
    _assert_same_files(tmp_path, tiny / SD15 / "tokenizer")


def test_controlnets_differ_from_each_other(tiny: Path) -> None:
    weights = {(tiny / r / "diffusion_pytorch_model.safetensors").read_bytes() for r in CONTROLNETS}
    assert len(weights) == len(CONTROLNETS)


def test_text_to_image(sd15: StableDiffusionPipeline) -> None:
    image = sd15(PROMPT, num_inference_steps=2, height=64, width=64, generator=_generator()).images[0]
    assert isinstance(image, Image.Image)
    assert image.size == (64, 64)


def test_inpainting(tiny: Path, photo: Image.Image) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny / INPAINTING)
    pipe.set_progress_bar_config(disable=True)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    out = pipe(PROMPT, image=photo, mask_image=mask, num_inference_steps=2, generator=_generator())
    assert out.images[0].size == (64, 64)


def test_instruct_pix2pix(tiny: Path, photo: Image.Image) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(tiny / PIX2PIX)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("make it look like winter", image=photo, num_inference_steps=2, generator=_generator())
    assert out.images[0].size == (64, 64)


def _controlnet_pipeline(sd15: StableDiffusionPipeline, folder: Path) -> StableDiffusionControlNetPipeline:
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    controlnet, info = ControlNetModel.from_pretrained(folder, output_loading_info=True)
    assert _no_loading_problems(info)
    pipe = StableDiffusionControlNetPipeline(
        **sd15.components, controlnet=controlnet, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _control(pipe: StableDiffusionControlNetPipeline, condition: Image.Image) -> np.ndarray:
    return pipe(
        PROMPT, image=condition, num_inference_steps=2, generator=_generator(), output_type="np"
    ).images[0]


@pytest.mark.parametrize("repo_id", CONTROLNETS)
def test_controlnet_pipeline_on_the_shared_base(
    tiny: Path, sd15: StableDiffusionPipeline, photo: Image.Image, repo_id: str
) -> None:
    pipe = _controlnet_pipeline(sd15, tiny / repo_id)
    assert pipe.unet is sd15.unet and pipe.vae is sd15.vae
    assert _control(pipe, photo).shape == (64, 64, 3)


def test_controlnet_condition_changes_the_image(
    tiny: Path, sd15: StableDiffusionPipeline, photo: Image.Image
) -> None:
    pipe = _controlnet_pipeline(sd15, tiny / "lllyasviel/sd-controlnet-canny")
    assert not np.array_equal(_control(pipe, photo), _control(pipe, Image.new("RGB", (64, 64))))


@pytest.mark.parametrize("task", ["caption", "vqa"])
def test_blip_generates_text(tiny: Path, photo: Image.Image, task: str) -> None:
    from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering, BlipProcessor

    if task == "caption":
        repo, model_class, text = "Salesforce/blip-image-captioning-base", BlipForConditionalGeneration, None
    else:
        repo, model_class, text = (
            "Salesforce/blip-vqa-base",
            BlipForQuestionAnswering,
            "what color is the cat?",
        )
    processor = BlipProcessor.from_pretrained(tiny / repo)
    model, info = model_class.from_pretrained(tiny / repo, output_loading_info=True)
    assert _no_loading_problems(info)
    assert processor.tokenizer.tokenize("a cat") == ["a", "cat"]
    inputs = processor(images=photo, text=text, return_tensors="pt")
    answer = processor.decode(model.generate(**inputs, max_new_tokens=5)[0], skip_special_tokens=True)
    assert isinstance(answer, str)


def test_dpt_depth(tiny: Path, photo: Image.Image) -> None:
    from transformers import AutoImageProcessor, DPTForDepthEstimation

    processor = AutoImageProcessor.from_pretrained(tiny / "Intel/dpt-hybrid-midas")
    model, info = DPTForDepthEstimation.from_pretrained(
        tiny / "Intel/dpt-hybrid-midas", output_loading_info=True
    )
    assert _no_loading_problems(info)
    assert model.config.is_hybrid
    with torch.no_grad():
        out = model(**processor(images=photo.resize((96, 64)), return_tensors="pt"))
    assert out.predicted_depth.shape == (1, 64, 64)
    depth = processor.post_process_depth_estimation(out, target_sizes=[(64, 96)])[0]["predicted_depth"]
    assert depth.shape == (64, 96)


def test_upernet_segmentation(tiny: Path, photo: Image.Image) -> None:
    from transformers import AutoImageProcessor, UperNetForSemanticSegmentation

    repo = tiny / "openmmlab/upernet-convnext-small"
    processor = AutoImageProcessor.from_pretrained(repo)
    model, info = UperNetForSemanticSegmentation.from_pretrained(repo, output_loading_info=True)
    assert _no_loading_problems(info)
    assert (model.config.id2label[0], model.config.id2label[12], model.config.id2label[149]) == (
        "wall",
        "person",
        "flag",
    )
    with torch.no_grad():
        out = model(**processor(images=photo, return_tensors="pt"))
    assert out.logits.shape[:2] == (1, 150)
    assert processor.post_process_semantic_segmentation(out, target_sizes=[(64, 64)])[0].shape == (64, 64)


def test_grounding_dino_boxes(tiny: Path, photo: Image.Image) -> None:
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    repo = tiny / "IDEA-Research/grounding-dino-tiny"
    processor = AutoProcessor.from_pretrained(repo)
    model, info = AutoModelForZeroShotObjectDetection.from_pretrained(repo, output_loading_info=True)
    assert _no_loading_problems(info)
    inputs = processor(images=photo, text="a cat. a dog.", return_tensors="pt")
    assert inputs.input_ids[0, 0].item() == 101 and 1012 in inputs.input_ids[0].tolist()
    with torch.no_grad():
        out = model(**inputs)
    result = processor.post_process_grounded_object_detection(
        out, inputs.input_ids, threshold=0.0, text_threshold=0.0, target_sizes=[(64, 64)]
    )[0]
    assert result["boxes"].ndim == 2 and result["boxes"].shape[1] == 4
    assert len(result["boxes"]) == len(result["scores"]) == len(result["text_labels"]) > 0


def test_sam_masks_from_a_box(tiny: Path, photo: Image.Image) -> None:
    from transformers import SamModel, SamProcessor

    processor = SamProcessor.from_pretrained(tiny / "facebook/sam-vit-base")
    model, info = SamModel.from_pretrained(tiny / "facebook/sam-vit-base", output_loading_info=True)
    assert _no_loading_problems(info)
    inputs = processor(images=photo, input_boxes=[[[8, 8, 40, 40]]], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, multimask_output=True)
    assert out.pred_masks.shape == (1, 1, 3, 32, 32)
    masks = processor.post_process_masks(
        out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    assert masks[0].shape == (1, 3, 64, 64) and masks[0].dtype == torch.bool


def test_annotator_detectors(tiny: Path) -> None:
    from controlnet_aux import HEDdetector, MLSDdetector, OpenposeDetector
    from controlnet_aux.open_pose.body import Body

    folder = tiny / "lllyasviel/Annotators"
    image = Image.new("RGB", (256, 256), (200, 180, 160))
    hed = HEDdetector.from_pretrained(folder)
    assert next(hed.netNetwork.parameters()).dtype == torch.float32
    openpose = OpenposeDetector(Body(str(folder / "body_pose_model.pth")), None, None)
    detectors = [hed, MLSDdetector.from_pretrained(folder), openpose]
    for detector in detectors:
        result = detector(image, detect_resolution=256, image_resolution=256)
        assert isinstance(result, Image.Image) and result.size == (256, 256)
    scribble = hed(image, detect_resolution=256, image_resolution=256, scribble=True)
    assert scribble.size == (256, 256)
