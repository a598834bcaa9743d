"""The baseline: the TaskMatrix way of running the same tools, measured in the same process.

Every tool loads its own diffusers/transformers pipeline at start-up, with its own SD1.5 copy, fp16,
default attention, eager. As in TaskMatrix's ``visual_chatgpt.py``, the detectors, UperNet and the DPT
depth pipelines run on the CPU whatever ``--load`` says, and the composite tools reuse other tools'
models. One difference favours the baseline: TaskMatrix also loads a safety checker for each SD
pipeline (about 0.6 GB each in fp16); neither side loads one here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
INPAINTING = "stable-diffusion-v1-5/stable-diffusion-inpainting"
PIX2PIX = "timbrooks/instruct-pix2pix"
ANNOTATORS = "lllyasviel/Annotators"
CONTROLNETS = {
    "CannyText2Image": "canny", "LineText2Image": "mlsd", "HedText2Image": "hed",
    "ScribbleText2Image": "scribble", "PoseText2Image": "openpose", "SegText2Image": "seg",
    "DepthText2Image": "depth", "NormalText2Image": "normal",
}  # fmt: skip


@dataclass
class Baseline:
    tools: dict[str, Any] = field(default_factory=dict)  # --load name -> its pipeline or (processor, model)
    seconds: dict[str, float] = field(default_factory=dict)


def load_all(root: Path, names: list[str], device: str, dtype: Any) -> Baseline:
    """Load every listed tool the TaskMatrix way, each on its own, timing each."""
    loaders = _loaders(root, device, dtype)
    baseline = Baseline()
    for name in names:
        if name not in loaders:
            continue  # Image2Canny and the composite tools load nothing of their own
        started = time.perf_counter()
        baseline.tools[name] = loaders[name]()
        baseline.seconds[name] = time.perf_counter() - started
    return baseline


def _loaders(root: Path, device: str, dtype: Any) -> dict[str, Callable[[], Any]]:
    return {**_diffusers_loaders(root, device, dtype), **_transformers_loaders(root, device, dtype),
            **_detector_loaders(root)}  # fmt: skip


def _diffusers_loaders(root: Path, device: str, dtype: Any) -> dict[str, Callable[[], Any]]:
    """Each SD pipeline with its own SD1.5 copy; each ControlNet pipeline too."""
    from diffusers import (
        ControlNetModel,
        StableDiffusionControlNetPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
    )

    no_checker = {"safety_checker": None, "requires_safety_checker": False}

    def sd(cls: Any, repo: str, **kwargs: Any) -> Any:
        pipe = cls.from_pretrained(root / repo, torch_dtype=dtype, **no_checker, **kwargs).to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def controlnet(condition: str) -> Any:
        net = ControlNetModel.from_pretrained(
            root / f"lllyasviel/sd-controlnet-{condition}", torch_dtype=dtype
        )
        return sd(StableDiffusionControlNetPipeline, SD15, controlnet=net)

    loaders: dict[str, Callable[[], Any]] = {
        "Text2Image": lambda: sd(StableDiffusionPipeline, SD15),
        "Inpainting": lambda: sd(StableDiffusionInpaintPipeline, INPAINTING),
        "InstructPix2Pix": lambda: sd(StableDiffusionInstructPix2PixPipeline, PIX2PIX),
    }
    for name, condition in CONTROLNETS.items():
        loaders[name] = lambda condition=condition: controlnet(condition)
    return loaders


def _transformers_loaders(root: Path, device: str, dtype: Any) -> dict[str, Callable[[], Any]]:
    """BLIP, GroundingDINO and SAM on the tool's device; UperNet and DPT on the CPU, as TaskMatrix has them."""
    import torch
    from transformers import (
        AutoModelForZeroShotObjectDetection,
        AutoProcessor,
        BlipForConditionalGeneration,
        BlipForQuestionAnswering,
        BlipProcessor,
        SamModel,
        SamProcessor,
        UperNetForSemanticSegmentation,
        pipeline,
    )

    def hf(
        model_cls: Any, processor_cls: Any, repo: str, model_dtype: Any = dtype, where: str = device
    ) -> Any:
        model = model_cls.from_pretrained(root / repo, dtype=model_dtype).to(where).eval()
        return processor_cls.from_pretrained(root / repo), model

    depth = lambda: pipeline("depth-estimation", model=str(root / "Intel/dpt-hybrid-midas"))  # noqa: E731
    return {
        "ImageCaptioning": lambda: hf(BlipForConditionalGeneration, BlipProcessor,
                                      "Salesforce/blip-image-captioning-base"),
        "VisualQuestionAnswering": lambda: hf(BlipForQuestionAnswering, BlipProcessor, "Salesforce/blip-vqa-base"),
        "Text2Box": lambda: hf(AutoModelForZeroShotObjectDetection, AutoProcessor, "IDEA-Research/grounding-dino-tiny",
                               torch.float32),
        "Segmenting": lambda: hf(SamModel, SamProcessor, "facebook/sam-vit-base"),
        "Image2Seg": lambda: hf(UperNetForSemanticSegmentation, AutoProcessor, "openmmlab/upernet-convnext-small",
                                torch.float32, "cpu"),
        "Image2Depth": depth,
        "Image2Normal": depth,
    }  # fmt: skip


def _detector_loaders(root: Path) -> dict[str, Callable[[], Any]]:
    """controlnet_aux's annotators, on the CPU."""
    annotators = root / ANNOTATORS

    def hed() -> Any:
        return _aux("hed").HEDdetector.from_pretrained(str(annotators), filename="ControlNetHED.pth")

    return {
        "Image2Hed": hed,
        "Image2Scribble": hed,
        "Image2Line": lambda: _mlsd(annotators / "mlsd_large_512_fp32.pth"),
        "Image2Pose": lambda: _aux("open_pose").Body(str(annotators / "body_pose_model.pth")),
    }


def _aux(module: str) -> Any:
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"controlnet_aux.{module}")


def _mlsd(path: Path) -> Any:
    import torch

    model = _aux("mlsd.models.mbv2_mlsd_large").MobileV2_MLSD_Large()
    model.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
    return model.eval()


# -- the calls the latency section times, with the same settings as the project's ---------------------
def text2image(pipe: Any, prompt: str, negative: str, steps: int, seed: int, size: int, **kw: Any) -> Any:
    return pipe(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=7.5, height=size,
                width=size, generator=_generator(seed), **kw).images[0]  # fmt: skip


def controlnet(
    pipe: Any, condition: Any, prompt: str, negative: str, steps: int, seed: int, **kw: Any
) -> Any:
    width, height = condition.size
    return pipe(prompt, condition, negative_prompt=negative, num_inference_steps=steps, guidance_scale=7.5,
                width=width, height=height, generator=_generator(seed), **kw).images[0]  # fmt: skip


def pix2pix(pipe: Any, image: Any, instruction: str, steps: int, seed: int, **kw: Any) -> Any:
    return pipe(instruction, image=image, num_inference_steps=steps, guidance_scale=7.5, image_guidance_scale=1.2,
                generator=_generator(seed), **kw).images[0]  # fmt: skip


def blip(tool: Any, image: Any, question: str | None, max_new_tokens: int) -> str:
    import torch

    processor, model = tool
    inputs = processor(images=image, text=question, return_tensors="pt").to(model.device, model.dtype)
    with torch.inference_mode():
        tokens = model.generate(**inputs, max_new_tokens=max_new_tokens)
    return processor.decode(tokens[0], skip_special_tokens=True)


def _generator(seed: int) -> Any:
    import torch

    return torch.Generator("cpu").manual_seed(seed)


def use_scheduler(pipe: Any, name: str | None) -> None:
    """The project's scheduler on a baseline pipeline, so both sides run the same sampler."""
    import diffusers

    if name:
        pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config)
