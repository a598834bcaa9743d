"""The opt-in draft card (Text2ImageDraft: LCM-LoRA, 4 steps) on the shared SD1.5 base, with tiny weights on CPU.

What a user would notice: default text2image images are byte for byte the same with the draft card loaded, before
and after draft calls; a draft is another picture; the shared UNet never carries the LoRA; the LoRA's twin follows
the shared UNet's moves and compiles without graph breaks; a draft with --int8-weights is refused in one sentence.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from foundation_models.draft import LoraWeights, lora_twin, twin
from foundation_models.fastpath.helper import recipe_for
from foundation_models.fastpath.regions import REGIONS, RegionCompiler
from foundation_models.tiny.lora import LCM_LORA_SD15, random_lora, save_lora
from foundation_models.tiny.stable_diffusion import SD15_BASE, tiny_unet
from orchestrator.engine import Orchestrator
from orchestrator.errors import SpecError
from orchestrator.settings import Settings

ARGS = {"prompt": "a lighthouse on a cliff", "seed": 7}


def image_digest(session, tool: str) -> str:
    call = session.call_tool(tool, ARGS)
    assert call.error is None, call.error
    return hashlib.sha256(session.images.path(call.images[0]).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def orchestrators(tmp_path_factory):
    root = tmp_path_factory.mktemp("draft")
    plain = Orchestrator("Text2Image_cpu", weights="tiny", brain="rules", session_root=root / "a")
    both = Orchestrator(
        "Text2Image_cpu,Text2ImageDraft_cpu", weights="tiny", brain="rules", session_root=root / "b"
    )
    yield plain, both
    plain.close()
    both.close()


def test_default_images_are_the_same_with_the_draft_card_loaded_before_and_after_a_draft(orchestrators):
    plain, both = orchestrators
    expected = image_digest(plain.new_session(), "text2image")
    session = both.new_session()
    assert image_digest(session, "text2image") == expected, "the draft card changes nothing by being listed"
    draft = image_digest(session, "text2image_draft")
    assert draft != expected, "a draft is another picture (LCM steps with the LoRA)"
    assert image_digest(session, "text2image") == expected, "a draft leaves the shared UNet as it was"
    assert image_digest(session, "text2image_draft") == draft, "same seed, same draft"


def test_the_shared_unet_never_carries_the_lora(orchestrators):
    _, both = orchestrators
    with both.manager.use("Text2Image") as text2image, both.manager.use("Text2ImageDraft") as draft:
        shared, lora = text2image.pipe.unet, draft.pipe.unet
        assert (
            draft.pipe.vae is text2image.pipe.vae and draft.pipe.text_encoder is text2image.pipe.text_encoder
        )
        assert not [n for n, _ in shared.named_parameters() if "lora" in n]
        assert type(draft.pipe.scheduler).__name__ == "LCMScheduler"
        lora_params = {n for n, _ in lora.named_parameters() if ".lora_" in n}
        assert lora_params and draft.own["lora"].params
        base = dict(shared.named_parameters())
        for name, param in lora.named_parameters():  # every other weight is the shared one itself
            if ".lora_" not in name:
                assert param is base[name.replace(".base_layer", "")], name
    statuses = {s.card: s for s in both.manager.status()}
    assert statuses["Text2ImageDraft"].compile_state == "eager", "off CUDA nothing compiles"


def test_the_twin_follows_moves_of_the_shared_unet_and_the_lora_moves_alone(tmp_path):
    unet = tiny_unet(SD15_BASE).eval()
    save_lora(random_lora(tiny_unet(SD15_BASE), rank=4, seed_name="tests/draft"), tmp_path)
    model = lora_twin(unet, tmp_path)
    x, t, e = torch.randn(1, 4, 32, 32), torch.tensor(5), torch.randn(1, 77, 32)
    with torch.no_grad():
        before = unet(x, t, e).sample
        assert not torch.allclose(model(x, t, e).sample, before), "the LoRA changes the twin's output"
    unet.to(memory_format=torch.channels_last)  # what the fast path does to the shared UNet once compiling
    kernel = model.conv_in.weight
    assert kernel is unet.conv_in.weight and kernel.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, e).sample, before)
    weights = LoraWeights(model)
    weights.to(torch.float64)  # what a move to another device does, seen on CPU: only the LoRA's matrices
    assert {p.dtype for p in weights.params} == {torch.float64}
    assert {p.dtype for p in unet.parameters()} == {torch.float32}
    assert recipe_for(model) is None, "the compile helper cannot build a LoRA twin from a config"
    assert twin(unet).conv_in is not unet.conv_in and twin(unet).conv_in.weight is unet.conv_in.weight


def test_the_lora_twin_compiles_in_regions_without_graph_breaks(tmp_path):
    """The blocks' compiled functions are shared per class: the twin's (LoRA layers inside) get their own
    entries, and neither changes the other's output."""
    unet = tiny_unet(SD15_BASE).eval()
    save_lora(random_lora(tiny_unet(SD15_BASE), rank=4, seed_name="tests/draft"), tmp_path)
    model = lora_twin(unet, tmp_path)

    def compile_fn(
        forward, dynamic=False
    ):  # dynamo's tracing, fullgraph as inductor gets it, no code generation
        return torch.compile(forward, backend="eager", fullgraph=True, dynamic=dynamic)

    regions = RegionCompiler(compile_fn, REGIONS)
    x, t, e = torch.randn(1, 4, 32, 32), torch.tensor(5), torch.randn(1, 77, 32)
    with torch.inference_mode():
        eager = unet(x, t, e).sample, model(x, t, e).sample
        compiled = (regions.compiled_forward(type(unet).forward.__get__(unet))(x, t, e).sample,
                    regions.compiled_forward(type(model).forward.__get__(model))(x, t, e).sample)  # fmt: skip
    torch.testing.assert_close(compiled[0], eager[0])
    torch.testing.assert_close(compiled[1], eager[1])


def test_a_lora_that_would_change_the_shared_text_encoder_is_refused(tmp_path):
    layers = random_lora(tiny_unet(SD15_BASE), rank=4, seed_name="tests/draft")
    from diffusers import StableDiffusionPipeline

    encoder = {"text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 32),
               "text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(32, 4)}  # fmt: skip
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=layers, text_encoder_lora_layers=encoder,
                                              weight_name="pytorch_lora_weights.safetensors")  # fmt: skip
    with pytest.raises(ValueError, match="also holds text_encoder weights; it may hold UNet weights only"):
        lora_twin(tiny_unet(SD15_BASE), tmp_path)


def test_a_draft_with_int8_weights_is_one_sentence_before_anything_loads(tmp_path):
    with pytest.raises(SpecError) as error:
        Orchestrator("Text2Image_cpu,Text2ImageDraft_cpu", weights="tiny", brain="rules", session_root=tmp_path,
                     settings=Settings.from_env(int8_weights=True))  # fmt: skip
    assert str(error.value) == (
        "Text2ImageDraft does not work with --int8-weights: its LoRA needs the shared UNet's float layers. "
        "Start without --int8-weights, or leave Text2ImageDraft out of --load."
    )


def test_the_draft_lora_is_one_file_the_downloader_fetches_and_the_tiny_one_has_its_layout(tmp_path):
    from foundation_models.tiny import build_tiny_checkpoint
    from orchestrator.cards import load_cards
    from orchestrator.download import card_needs

    needs = {n.repo_id: n for n in card_needs(load_cards(), "Text2ImageDraft")}
    assert needs[LCM_LORA_SD15].kind == "files" and needs[LCM_LORA_SD15].files == (
        "pytorch_lora_weights.safetensors",
    )
    assert needs[SD15_BASE].kind == "pipeline", "the shared base comes with its group"
    build_tiny_checkpoint(LCM_LORA_SD15, tmp_path)
    from safetensors import safe_open

    with safe_open(str(Path(tmp_path) / "pytorch_lora_weights.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in keys)
    assert any(".attn1.to_q." in k for k in keys) and any(".resnets.0.conv1." in k for k in keys)


def test_the_rules_brain_routes_a_quick_draft_to_the_draft_tool(orchestrators):
    _, both = orchestrators
    result = both.new_session().chat("a quick draft of a red bicycle")
    assert [c.tool for c in result.tool_calls] == ["text2image_draft"]
    assert result.tool_calls[0].args["prompt"] == "a red bicycle"
