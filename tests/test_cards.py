"""model_cards.yaml: every TaskMatrix name, valid fields, clear errors, and the README table in sync."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from orchestrator.cards import default_cards_path, load_cards, parse_cards
from orchestrator.errors import CardError
from orchestrator.vram_table import main as vram_table_main

ROOT = Path(__file__).resolve().parents[1]
TASKMATRIX_NAMES = """ImageCaptioning Text2Image ImageEditing InstructPix2Pix Image2Canny CannyText2Image Image2Line
LineText2Image Image2Hed HedText2Image Image2Scribble ScribbleText2Image Image2Pose PoseText2Image Image2Seg
SegText2Image Image2Depth DepthText2Image Image2Normal NormalText2Image VisualQuestionAnswering Text2Box
Segmenting Inpainting ObjectSegmenting BackgroundRemoving InfinityOutPainting""".split()
NEW_NAMES = [
    "TextEmbedding",
    "TextEmbeddingEnglish",
    "WebSearch",
    "WebReader",
    "TextRendering",
    "TextArt",
    "Text2ImageDraft",
]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "model_cards.yaml").read_text())


def test_every_taskmatrix_name_has_a_card():
    cards = load_cards()
    assert sorted(cards.names()) == sorted(TASKMATRIX_NAMES + NEW_NAMES)


def test_installed_path_finds_the_same_file():
    assert default_cards_path().resolve() == (ROOT / "model_cards.yaml").resolve()


def test_every_family_has_a_module():
    cards = load_cards()
    families = {c.family for c in cards.cards.values()} | {g.family for g in cards.groups.values()}
    missing = [f for f in families if not (ROOT / "foundation_models" / f"{f}.py").is_file()]
    assert not missing, f"families without a module: {missing}"


def test_checkpoints_are_the_current_hub_ids():
    cards = load_cards()
    repos = {r for c in cards.cards.values() for r in c.checkpoints.values()}
    repos |= {g.checkpoint for g in cards.groups.values()}
    expected = {
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "stable-diffusion-v1-5/stable-diffusion-inpainting",
        "Salesforce/blip-image-captioning-base",
        "Salesforce/blip-vqa-base",
        "timbrooks/instruct-pix2pix",
        "lllyasviel/Annotators",
        "Intel/dpt-hybrid-midas",
        "openmmlab/upernet-convnext-small",
        "IDEA-Research/grounding-dino-tiny",
        "facebook/sam-vit-base",
        "intfloat/multilingual-e5-small",
        "sentence-transformers/all-MiniLM-L6-v2",
        "latent-consistency/lcm-lora-sdv1-5",
    } | {f"lllyasviel/sd-controlnet-{c}" for c in "canny mlsd hed scribble openpose seg depth normal".split()}
    assert repos == expected


def test_sd_base_is_one_group_shared_by_text2image_inpainting_and_all_controlnets():
    cards = load_cards()
    users = {c.name for c in cards.cards.values() if "sd15_base" in c.shares}
    controlnets = {n for n in cards.names() if n.endswith("Text2Image") and n != "Text2Image"}
    assert len(controlnets) == 8
    assert {"Text2Image", "Inpainting"} | controlnets <= users


def test_composites_depend_on_real_cards():
    cards = load_cards()
    assert cards["ImageEditing"].depends_on == ("Text2Box", "Segmenting", "Inpainting")
    assert cards.with_dependencies(["ObjectSegmenting"]) == ["Text2Box", "Segmenting", "ObjectSegmenting"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["cards"]["Text2Image"].update(dtype="float8"), "Card Text2Image: field 'dtype'"),
        (lambda d: d["cards"]["ImageCaptioning"].update(vram_mb=-3), "Card ImageCaptioning: field 'vram_mb'"),
        (
            lambda d: d["cards"]["ImageCaptioning"].update(vram_mb="lots"),
            "Card ImageCaptioning: field 'vram_mb'",
        ),
        (lambda d: d["cards"]["Text2Image"].update(working_mb=-1), "Card Text2Image: field 'working_mb'"),
        (lambda d: d["cards"]["Text2Image"].update(shares=["sd14_base"]), "Card Text2Image: field 'shares'"),
        (
            lambda d: d["cards"]["Inpainting"].update(shares={"sd15_base": ["vea"]}),
            "Card Inpainting: field 'shares.sd15_base'",
        ),
        (
            lambda d: d["cards"]["ImageEditing"].update(depends_on=["Text2Bux"]),
            "Card ImageEditing: field 'depends_on'",
        ),
        (lambda d: d["cards"]["Text2Box"].update(depends_on=["ImageEditing"]), "forms a cycle"),
        (lambda d: d["cards"]["Text2Image"].update(tools=["Text-2-Image"]), "Card Text2Image: field 'tools'"),
        (
            lambda d: d["cards"]["Image2Canny"].update(tools=["text2image"]),
            "Card Image2Canny: field 'tools' repeats",
        ),
        (
            lambda d: d["cards"]["Segmenting"].update(checkpoints={"model": "sam"}),
            "Card Segmenting: field 'checkpoints.model'",
        ),
        (lambda d: d["cards"]["Segmenting"].update(famliy="sam"), "Card Segmenting: unknown field 'famliy'"),
        (lambda d: d["cards"]["Segmenting"].pop("family"), "Card Segmenting: field 'family' is required"),
        (lambda d: d["groups"]["sd15_base"].update(components={}), "Group sd15_base: field 'components'"),
    ],
)
def test_invalid_card_names_card_and_field(raw, edit, message):
    broken = copy.deepcopy(raw)
    edit(broken)
    with pytest.raises(CardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_cards(broken)


def test_broken_yaml_is_a_card_error(tmp_path):
    path = tmp_path / "cards.yaml"
    path.write_text("cards: {Text2Image: [unclosed")
    with pytest.raises(CardError, match="not valid YAML"):
        load_cards(path)


def test_readme_vram_table_matches_the_cards():
    assert vram_table_main(["--check", "--readme", str(ROOT / "README.md")]) == 0


def test_every_gpu_card_says_what_a_call_takes_and_measured_working_memory_is_written_back():
    from benchmarks.update_cards import update

    cards = load_cards()
    assert all(
        c.working_mb > 0 for c in cards.cards.values() if c.family in ("stable_diffusion", "controlnet")
    )
    text = (ROOT / "model_cards.yaml").read_text()
    stripped = "".join(
        line for line in text.splitlines(keepends=True) if not line.startswith("    working_mb:")
    )
    assert parse_cards(yaml.safe_load(stripped))["Text2Image"].working_mb == 0, "the field is optional"
    written = update(stripped, {}, {}, {"Text2Image": 700, "ImageCaptioning": 90})
    again = update(written, {}, {}, {"Text2Image": 710})  # a second run replaces, never adds a line
    assert again.count("    working_mb:") == 2
    parsed = parse_cards(yaml.safe_load(again))
    assert (parsed["Text2Image"].working_mb, parsed["ImageCaptioning"].working_mb) == (710, 90)
    assert parsed["Text2Image"].vram_mb == cards["Text2Image"].vram_mb
