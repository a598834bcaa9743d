"""Understanding, grounding and editing tools end to end with tiny weights, through a session.

The upload is 128×64 (non-square) so every tool shows whether it keeps the aspect ratio. Tiny weights
give noise: tests check what a user would notice (images made, sizes, lineage, untouched pixels,
"nothing found" observations), not content.

"Nothing found": with random weights GroundingDINO scores saturate at ~0.9999, so the ``strict``
orchestrator raises the Text2Box card's ``box_threshold`` above 1 through its options; the ``lenient``
one lowers Segmenting's mask-quality thresholds to 0 (and its points grid to 4×4, for speed) so Segment
Anything returns segments at all.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from orchestrator.cards import default_cards_path, parse_cards
from orchestrator.engine import Orchestrator
from orchestrator.images import ImageLimits

CARDS = ["ImageCaptioning", "VisualQuestionAnswering", "Text2Box", "Segmenting", "ObjectSegmenting", "Inpainting",
         "ImageEditing", "BackgroundRemoving", "InfinityOutPainting", "InstructPix2Pix"]  # fmt: skip
SIZE = (128, 64)


def _orchestrator(tmp_path_factory, **options: dict) -> Orchestrator:
    raw = yaml.safe_load(default_cards_path().read_text())
    for card, extra in options.items():
        raw["cards"][card]["options"] = {**raw["cards"][card].get("options", {}), **extra}
    orch = Orchestrator(",".join(f"{c}_cpu" for c in CARDS), weights="tiny", cards=parse_cards(raw),
                        session_root=tmp_path_factory.mktemp("sessions"), image_limits=ImageLimits(max_side=128))  # fmt: skip
    _track_nesting(orch)
    return orch


def _track_nesting(orch: Orchestrator) -> None:
    """Record the deepest nesting of ``with ctx.model(...)`` blocks (tools must use one model at a time)."""
    use, orch.max_depth, depth = orch.manager.use, 0, [0]

    @contextlib.contextmanager
    def tracked(name, report=None):
        depth[0] += 1
        orch.max_depth = max(orch.max_depth, depth[0])
        try:
            with use(name, report) as model:
                yield model
        finally:
            depth[0] -= 1

    orch.manager.use = tracked


@pytest.fixture(scope="module")
def orch(tmp_path_factory):
    return _orchestrator(tmp_path_factory)


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    return _orchestrator(tmp_path_factory, Text2Box={"box_threshold": 1.01})


@pytest.fixture(scope="module")
def lenient(tmp_path_factory):
    thresholds = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    return _orchestrator(tmp_path_factory, Segmenting={"points_per_side": 4, **thresholds})  # 16 points: fast


def _picture() -> Image.Image:
    image = Image.new("RGB", SIZE, (40, 90, 200))
    ImageDraw.Draw(image).rectangle((40, 16, 88, 56), fill=(220, 30, 30))
    return image


def _upload(orch: Orchestrator):
    session = orch.new_session()
    name = session.upload(_picture())
    assert session.images.lineage(name).size == SIZE  # the non-square upload is kept as it is
    return session, name


def _check_outputs(
    session, call, parent: str, count: int, size=SIZE, seeded: bool = False
) -> list[np.ndarray]:
    """The call made ``count`` images of ``size``, all derived from ``parent``, named in the observation."""
    assert call.error is None, call.error
    assert len(call.images) == count
    pixels = []
    for name in call.images:
        record = session.images.lineage(name)
        assert record.size == size and record.tool == call.tool and record.parents == (parent,)
        assert (record.seed is not None) == seeded
        assert name in call.output
        pixels.append(np.asarray(session.images.open(name)))
    return pixels


def test_captioning_and_question_answering_answer_in_text(orch):
    session, name = _upload(orch)
    caption = session.call_tool("image_captioning", {"image": name})
    assert caption.error is None and caption.images == [] and caption.output.startswith(f"Caption of {name}")
    answer = session.call_tool("visual_question_answering", {"image": name, "question": "what color is it?"})
    assert answer.error is None and answer.images == [] and "what color is it?" in answer.output
    empty = session.call_tool("visual_question_answering", {"image": name, "question": "  "})
    assert empty.error and "question" in empty.error


def test_text2box_draws_boxes_inside_the_image(orch):
    session, name = _upload(orch)
    call = session.call_tool("text2box", {"image": name, "object": "cat"})
    (drawn,) = _check_outputs(session, call, name, 1)
    assert not np.array_equal(drawn, np.asarray(_picture()))  # boxes were drawn
    boxes = [tuple(map(int, b)) for b in re.findall(r"\((\d+), (\d+), (\d+), (\d+)\)", call.output)]
    assert boxes and all(0 <= x0 < x1 <= SIZE[0] and 0 <= y0 < y1 <= SIZE[1] for x0, y0, x1, y1 in boxes)


def test_segment_object_gives_an_overlay_and_a_black_and_white_mask(orch):
    session, name = _upload(orch)
    call = session.call_tool("segment_object", {"image": name, "object": "red box"})
    overlay, mask = _check_outputs(session, call, name, 2)
    assert set(np.unique(mask)) <= {0, 255} and mask.max() == 255
    assert "mask" in call.output and orch.max_depth == 1


def test_segment_object_falls_back_to_the_box_where_sam_gives_an_empty_mask(orch, monkeypatch):
    session, name = _upload(orch)
    boxed = session.call_tool("text2box", {"image": name, "object": "red box"})
    boxes = [tuple(map(int, b)) for b in re.findall(r"\((\d+), (\d+), (\d+), (\d+)\)", boxed.output)]
    with orch.manager.use("Segmenting") as sam:
        monkeypatch.setattr(
            sam, "masks_from_boxes", lambda image, boxes: [np.zeros((64, 128), bool) for _ in boxes]
        )
    call = session.call_tool("segment_object", {"image": name, "object": "red box"})
    _, mask = _check_outputs(session, call, name, 2)
    expected = np.zeros((64, 128), bool)
    for x0, y0, x1, y1 in boxes:
        expected[y0:y1, x0:x1] = True
    assert np.array_equal(mask[..., 0] == 255, expected)


def test_remove_and_replace_object_repaint_with_a_recorded_seed(orch):
    session, name = _upload(orch)
    removed = session.call_tool("remove_object", {"image": name, "object": "red box"})
    _check_outputs(session, removed, name, 1, seeded=True)
    first = session.call_tool(
        "replace_object", {"image": name, "object": "red box", "replacement": "a cat", "seed": 7}
    )
    again = session.call_tool(
        "replace_object", {"image": name, "object": "red box", "replacement": "a cat", "seed": 7}
    )
    (a,), (b,) = (
        _check_outputs(session, first, name, 1, seeded=True),
        _check_outputs(session, again, name, 1, seeded=True),
    )
    assert session.images.lineage(first.images[0]).seed == 7
    assert np.array_equal(a, b)  # the same seed repaints the same way
    assert orch.max_depth == 1


def test_remove_background_keeps_object_pixels_and_whitens_the_rest(orch):
    session, name = _upload(orch)
    call = session.call_tool("remove_background", {"image": name})
    (out,) = _check_outputs(session, call, name, 1)
    original = np.asarray(_picture())
    kept = (out == original).all(axis=-1)
    white = (out == 255).all(axis=-1)
    assert (kept | white).all() and kept.any()
    assert orch.max_depth == 1


def test_instruct_pix2pix_keeps_the_size_and_records_the_seed(orch):
    session, name = _upload(orch)
    call = session.call_tool("instruct_pix2pix", {"image": name, "instruction": "make it winter", "seed": 3})
    _check_outputs(session, call, name, 1, seeded=True)
    assert session.images.lineage(call.images[0]).seed == 3


def test_outpainting_grows_step_by_step_to_the_rounded_size_and_keeps_the_original(orch):
    session, name = _upload(orch)
    progress = []
    call = session.call_tool(
        "outpainting", {"image": name, "width": 300, "height": 170}, report=progress.append
    )
    (out,) = _check_outputs(
        session, call, name, 1, size=(320, 192), seeded=True
    )  # rounded to multiples of 64
    steps = [p.message for p in progress if p.message.startswith("outpainting step")]
    assert steps == ["outpainting step 1/2: 256×192", "outpainting step 2/2: 320×192"]  # 128 px per step
    x, y, inset = (320 - SIZE[0]) // 2, (192 - SIZE[1]) // 2, 8
    centre = out[y + inset : y + SIZE[1] - inset, x + inset : x + SIZE[0] - inset]
    assert np.array_equal(centre, np.asarray(_picture())[inset:-inset, inset:-inset])
    assert orch.max_depth == 1


def test_outpainting_to_a_smaller_size_is_an_error_the_model_can_fix(orch):
    session, name = _upload(orch)
    call = session.call_tool("outpainting", {"image": name, "width": 64, "height": 64})
    assert call.images == [] and "only enlarges" in call.error and "128×64" in call.error


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("text2box", {"object": "unicorn"}),
        ("segment_object", {"object": "unicorn"}),
        ("remove_object", {"object": "unicorn"}),
        ("replace_object", {"object": "unicorn", "replacement": "a horse"}),
        ("remove_background", {}),
    ],
)
def test_nothing_found_is_an_observation_not_an_error(strict, tool, args):
    session, name = _upload(strict)
    call = session.call_tool(tool, {"image": name, **args})
    assert call.error is None and call.images == []
    assert re.search(r"found no|could not find", call.output, re.IGNORECASE), call.output


def test_segment_anything_colours_segments_or_says_none_were_found(orch, lenient):
    session, name = _upload(orch)  # random weights: no mask passes SAM's default quality thresholds
    none = session.call_tool("segment_anything", {"image": name})
    assert none.error is None and none.images == [] and "no segments" in none.output
    session, name = _upload(lenient)
    call = session.call_tool("segment_anything", {"image": name})
    _check_outputs(session, call, name, 1)
    assert re.search(r"into \d+ region", call.output)
