"""BLIP's fast greedy path (foundation_models/fastpath/blip.py) gives the answers generate() gives.

On CPU the static-cache loop runs without CUDA graphs (``graphs=False``); the graph path itself is checked by
the CUDA test at the end, skipped without a GPU. The tiny checkpoint's vision encoder is initialised at BLIP's
``initializer_range`` of 1e-10, so every image gets the same caption; ``seeing`` redraws those weights so that
the answers depend on the image.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from foundation_models.blip import Blip
from foundation_models.fastpath.blip import QUESTION_BUCKET, FastGreedy
from foundation_models.tiny import build_tiny_checkpoint

QUESTIONS = ["what color is the sky?", "how many dogs are there", "is it a cat"]
LENGTHS = [1, 4, 30]


def seeing(model):
    """The model with image-dependent answers: vision weights redrawn, the decoder's cross-attention louder."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.vision_model.parameters():
            if weight.dim() > 1:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
        for name, weight in model.named_parameters():
            if "crossattention" in name and weight.dim() > 1:  # the text decoder's, and VQA's text encoder's
                weight.mul_(10)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering, BlipProcessor

    folder = tmp_path_factory.mktemp("blip")
    build_tiny_checkpoint("Salesforce/blip-image-captioning-base", folder / "caption")
    build_tiny_checkpoint("Salesforce/blip-vqa-base", folder / "vqa")
    caption = seeing(BlipForConditionalGeneration.from_pretrained(folder / "caption").eval())
    vqa = seeing(BlipForQuestionAnswering.from_pretrained(folder / "vqa").eval())
    return {"caption": caption, "vqa": vqa, "processor": BlipProcessor.from_pretrained(folder / "caption")}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(3)]


def generate(model, inputs, n):
    with torch.inference_mode():
        return model.generate(**{k: v.clone() for k, v in inputs.items()}, max_new_tokens=n)


def assert_same(model, inputs, n, decoder=None):
    decoder = decoder or FastGreedy(model, graphs=False)
    expected = generate(model, inputs, n)
    got = decoder.generate(**inputs, max_new_tokens=n)
    assert decoder.last_path == "fast"
    assert got.tolist() == expected.tolist()
    return expected


def test_the_tiny_models_answer_differently_for_different_images_and_questions(tiny, images):
    captions = {tuple(generate(tiny["caption"], tiny["processor"](images=i, return_tensors="pt"), 8)[0].tolist())
                for i in images}  # fmt: skip
    answers = {tuple(generate(tiny["vqa"], tiny["processor"](images=i, text=q, return_tensors="pt"), 8)[0].tolist())
               for i in images[:2] for q in QUESTIONS[:2]}  # fmt: skip
    assert len(captions) == 3 and len(answers) == 4, "the comparisons below would not see the inputs"


@pytest.mark.parametrize("n", LENGTHS)
def test_captions_are_generates_ids(tiny, images, n):
    decoder = FastGreedy(tiny["caption"], graphs=False)  # one decoder: its buffers are reused across images
    for image in images:
        assert_same(tiny["caption"], tiny["processor"](images=image, return_tensors="pt"), n, decoder)


@pytest.mark.parametrize("n", LENGTHS)
def test_answers_are_generates_ids(tiny, images, n):
    decoder = FastGreedy(tiny["vqa"], graphs=False)
    for image, question in zip(images, QUESTIONS):
        inputs = tiny["processor"](images=image, text=question, return_tensors="pt")
        assert_same(tiny["vqa"], inputs, n, decoder)


def test_questions_of_different_lengths_share_a_bucket_and_keep_generates_ids(tiny, images):
    """Each new signature costs a capture and graph memory on CUDA: questions are padded to QUESTION_BUCKET
    tokens, hidden from the decoder's cross-attention (which transformers' BLIP would not mask by itself)."""
    decoder = FastGreedy(tiny["vqa"], graphs=False)
    short = ["what is it", "what color is the sky?", "is there a red car in the street?"]
    long = "is the animal on the left of the picture bigger than the one standing on the right side of it?"
    lengths = []
    for question in [*short, long]:
        inputs = tiny["processor"](images=images[0], text=question, return_tensors="pt")
        lengths.append(inputs["input_ids"].shape[1])
        assert_same(tiny["vqa"], inputs, 8, decoder)
    assert len(set(lengths[:3])) == 3 and max(lengths[:3]) <= QUESTION_BUCKET < lengths[3]
    assert len(decoder.buffers) == 2  # one signature for the three short questions, one for the long one
    copy_ = copy.deepcopy(tiny["vqa"])  # hooks copied with the model read the copy's own mask
    assert_same(copy_, tiny["processor"](images=images[1], text=short[1], return_tensors="pt"), 8)


@pytest.mark.parametrize("task", ["caption", "vqa"])
def test_a_padded_batch_of_prompts_gives_generates_ids(tiny, images, task):
    """Captions that continue a text prompt, and questions, two at a time: padding and per-row positions."""
    inputs = tiny["processor"](images=images[:2], text=["a photo of a big red", "a dog"], return_tensors="pt",
                               padding=True)  # fmt: skip
    assert_same(tiny[task], inputs, 12)


@pytest.mark.parametrize("task", ["caption", "vqa"])
def test_stops_where_generate_stops_on_eos(tiny, images, task):
    """eos made a token generate emits early (a copy of the model with that sep_token_id): both stop there,
    and in a batch the row that finished first is padded while the other goes on."""
    model = copy.deepcopy(tiny[task])
    text = "what is it" if task == "vqa" else None
    single = tiny["processor"](images=images[0], text=text, return_tensors="pt")
    tokens = generate(model, single, 12)[0, 1:].tolist()
    stop = next(t for i, t in enumerate(tokens) if i >= 2 and t not in tokens[:i])  # new at index >= 2
    model.config.text_config.sep_token_id = stop
    assert len(assert_same(model, single, 30)[0]) == 1 + tokens.index(stop) + 1
    batch = tiny["processor"](images=images[:2], text=[text, "a dog is"] if text else None, return_tensors="pt",
                              padding=True)  # fmt: skip
    ids = assert_same(model, batch, 30)[:, 1:]
    pad = model.config.text_config.pad_token_id
    stopped = [int(row.tolist().index(stop)) if stop in row.tolist() else None for row in ids]
    assert stopped[0] is not None
    for row, at in zip(ids, stopped):
        assert at is None or (row[at + 1 :] == pad).all()


@pytest.mark.parametrize(
    "setting",
    [
        {"num_beams": 2},
        {"do_sample": True},
        {"repetition_penalty": 1.5},
        {"no_repeat_ngram_size": 2},
        {"min_new_tokens": 5},
        {"suppress_tokens": [7]},
    ],  # fmt: skip
)
def test_a_generation_config_that_is_not_plain_greedy_goes_to_generate(tiny, images, setting):
    model = copy.deepcopy(tiny["caption"])
    for name, value in setting.items():
        setattr(model.text_decoder.generation_config, name, value)
    decoder = FastGreedy(model, graphs=False)
    inputs = tiny["processor"](images=images[0], return_tensors="pt")
    torch.manual_seed(0)
    got = decoder.generate(**inputs, max_new_tokens=6)
    assert decoder.last_path == "generate"
    torch.manual_seed(0)
    assert got.tolist() == generate(model, inputs, 6).tolist()


def test_off_cuda_the_graph_path_is_generate(tiny, images):
    decoder = FastGreedy(tiny["caption"])  # graphs=True, the default
    inputs = tiny["processor"](images=images[0], return_tensors="pt")
    expected = generate(tiny["caption"], inputs, 5)
    assert decoder.generate(**inputs, max_new_tokens=5).tolist() == expected.tolist()
    assert decoder.last_path == "generate" and not decoder.buffers


def test_blip_fast_and_eager_answer_the_same(tiny, images, monkeypatch):
    fast = Blip(tiny["vqa"], tiny["processor"], "vqa", 10, fast=True)
    fast.decoder = FastGreedy(tiny["vqa"], graphs=False)  # the CUDA-less stand-in for the graph path
    eager = Blip(tiny["vqa"], tiny["processor"], "vqa", 10, fast=False)
    eager.decoder.generate = None  # fast=False never reaches the fast decoder
    for image, question in zip(images, QUESTIONS):
        assert fast.answer(image, question) == eager.answer(image, question)
    assert fast.decoder.last_path == "fast"
    assert Blip(tiny["vqa"], tiny["processor"], "vqa", 10).fast is True


@pytest.mark.parametrize("env, fast", [("0", False), ("1", True)])
def test_the_environment_reaches_blip_through_the_orchestrator(tmp_path, monkeypatch, env, fast):
    from orchestrator.engine import Orchestrator
    from orchestrator.settings import SWITCHES

    FAST_ENV = SWITCHES["fast"]

    monkeypatch.setenv(FAST_ENV, env)  # read at the edge: Orchestrator(fast=None)
    orch = Orchestrator("ImageCaptioning_cpu", weights="tiny", session_root=tmp_path)
    with orch.manager.use("ImageCaptioning") as model:
        assert model.fast is fast


@pytest.mark.parametrize("fast", [True, False])
def test_the_orchestrators_fast_flag_reaches_blip(tmp_path, fast):
    from orchestrator.engine import Orchestrator
    from orchestrator.settings import Settings

    orch = Orchestrator("ImageCaptioning_cpu", weights="tiny", session_root=tmp_path,
                        settings=Settings.from_env(fast=fast))  # fmt: skip
    with orch.manager.use("ImageCaptioning") as model:
        assert model.fast is fast


def test_moving_the_model_drops_the_caches_and_the_next_call_works(tiny, images):
    model = copy.deepcopy(tiny["caption"])
    blip = Blip(model, tiny["processor"], "caption", 8, fast=True)
    blip.decoder = FastGreedy(model, graphs=False)
    before = blip.caption(images[0])
    assert blip.decoder.buffers
    blip.to("cpu")
    assert not blip.decoder.buffers
    assert blip.caption(images[0]) == before and blip.decoder.last_path == "fast"
    buffers = list(blip.decoder.buffers.values())
    model.half().float()  # the weights move to new storage behind Blip's back: the decoder notices, starts over
    inputs = tiny["processor"](images=images[1], return_tensors="pt")
    assert_same(model, inputs, 8, blip.decoder)
    assert len(blip.decoder.buffers) == 1 and next(iter(blip.decoder.buffers.values())) is not buffers[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graph_replay_gives_generates_ids(tiny, images, dtype):
    for task in ("caption", "vqa"):
        model = copy.deepcopy(tiny[task]).to("cuda", dtype)
        decoder = FastGreedy(model)
        for image, question in zip(images, QUESTIONS):
            text = question if task == "vqa" else None
            inputs = tiny["processor"](images=image, text=text, return_tensors="pt").to("cuda", dtype)
            for n in LENGTHS:
                assert_same(model, inputs, n, decoder)
        assert all(b.first is not None for b in decoder.buffers.values())  # captured, then replayed


def test_a_fast_path_that_fell_back_is_shown_in_the_panel_and_by_warmup(tmp_path):
    """Issue 25: on transformers 5.17 the decoder's capture failed and only a log line said so. A fallback is
    now part of the card's status: the models panel and ``warmup`` show it. (CPU: the capture is not run here;
    the GPU run in docs/benchmarks.md shows the real one.)"""
    from orchestrator import Orchestrator
    from orchestrator.cli.warmup import format_report
    from orchestrator.ui.i18n import Strings
    from orchestrator.ui.panel import models_html
    from orchestrator.warmup import warm_up

    orch = Orchestrator("ImageCaptioning_cpu", weights="tiny", brain="rules", session_root=tmp_path)
    assert "fell back" not in models_html(orch, Strings("en"))
    report = warm_up(orch)
    with orch.manager.use("ImageCaptioning") as blip:
        blip.decoder.fallback = "CUDA graph capture of the BLIP decoder failed, so generate() answers: boom"
    assert "the fast path fell back: CUDA graph capture of the BLIP decoder failed" in models_html(
        orch, Strings("en")
    )
    report = warm_up(orch)
    assert report.rows[0].fast_fallback.endswith("boom")
    assert "fast path fell back for image_captioning: CUDA graph capture" in format_report(report)
    assert "快速路径已回退" in models_html(orch, Strings("zh"))
