"""Pixel helpers behind the editing tools: box clipping, mask dilation, compositing, canvas growth."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from foundation_models.grounding import clip_box, phrases
from orchestrator.toolbox.masks import (
    box_mask,
    dilate,
    draw_boxes,
    extend_canvas,
    fit_size,
    mask_image,
    paste_masked,
    union,
)


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((10, 5, 50, 40), (10, 5, 50, 40)),  # inside: unchanged
        ((-20, -3, 50, 40), (0, 0, 50, 40)),  # past the top-left corner
        ((100, 30, 300, 90), (100, 30, 128, 64)),  # past the bottom-right corner
        ((-10, -10, 500, 500), (0, 0, 128, 64)),  # bigger than the image
        ((50, 40, 10, 5), (10, 5, 50, 40)),  # corners given in the wrong order
    ],
)
def test_clip_box_keeps_boxes_inside_the_image(box, expected):
    assert clip_box(box, 128, 64) == expected


@pytest.mark.parametrize(
    "box", [(130, 10, 200, 40), (-50, -50, -1, -1), (10, 70, 40, 90), (20, 20, 20.5, 40)]
)
def test_clip_box_drops_boxes_outside_or_without_area(box):
    assert clip_box(box, 128, 64) is None


def test_phrases_use_grounding_dino_prompt_format():
    assert phrases("Cat, red car") == "cat. red car."
    assert phrases("a dog.") == "a dog."
    assert phrases(" , ") == ""


def test_dilate_grows_a_mask_by_a_disc_and_never_shrinks_it():
    mask = np.zeros((40, 60), dtype=bool)
    mask[20, 30] = True
    grown = dilate(mask, 5)
    assert grown.dtype == bool and grown.shape == mask.shape
    assert grown[20, 25] and grown[20, 35] and grown[15, 30] and grown[25, 30]  # 5 px in each direction
    assert not grown[20, 24] and not grown[20, 36] and not grown[14, 30]  # but not 6
    assert not grown[15, 25]  # a disc, not a square: the corner is 7 px away
    assert (grown | mask).sum() == grown.sum()  # the original pixel is kept
    assert 60 < grown.sum() < 11 * 11


def test_dilate_does_not_wrap_around_edges_and_zero_is_identity():
    mask = np.zeros((20, 20), dtype=bool)
    mask[0, 0] = True
    grown = dilate(mask, 3)
    assert grown[0, 3] and grown[3, 0]
    assert not grown[19, 0] and not grown[0, 19] and not grown[19, 19]
    assert np.array_equal(dilate(mask, 0), mask)
    assert not dilate(np.zeros((5, 5), dtype=bool), 4).any()


def test_union_and_mask_image():
    a, b = np.zeros((4, 6), dtype=bool), np.zeros((4, 6), dtype=bool)
    a[0, 0], b[3, 5] = True, True
    both = union([a, b], (6, 4))
    assert both.sum() == 2 and both[0, 0] and both[3, 5]
    assert not union([], (6, 4)).any() and union([], (6, 4)).shape == (4, 6)
    picture = mask_image(both)
    assert picture.mode == "L" and picture.size == (6, 4)
    assert set(np.unique(np.asarray(picture))) == {0, 255}


def test_box_mask_covers_exactly_the_box():
    mask = box_mask((2.4, 1.0, 5.0, 3.0), (8, 4))
    assert mask.shape == (4, 8)
    assert mask[1:3, 2:5].all() and mask.sum() == 2 * 3


def test_paste_masked_changes_only_the_masked_pixels():
    original = Image.new("RGB", (8, 4), (10, 20, 30))
    generated = Image.new("RGB", (8, 4), (200, 100, 50))
    mask = np.zeros((4, 8), dtype=bool)
    mask[1:3, 2:5] = True
    out = np.asarray(paste_masked(original, generated, mask))
    assert (out[mask] == (200, 100, 50)).all()
    assert (out[~mask] == (10, 20, 30)).all()


def test_fit_size_keeps_multiples_of_64_within_the_long_side():
    assert fit_size((512, 384), 512) == (512, 384)  # already fits: unchanged
    assert fit_size((1024, 512), 512) == (512, 256)  # halved, aspect kept
    assert fit_size((128, 64), 512) == (128, 64)  # never enlarged
    assert fit_size((1000, 130), 512) == (512, 64)  # never below 64


def test_extend_canvas_centres_the_image_and_masks_only_the_new_border():
    image = Image.new("RGB", (4, 2), (1, 2, 3))
    canvas, border = extend_canvas(image, (8, 6))
    assert canvas.size == (8, 6) and border.shape == (6, 8)
    pixels = np.asarray(canvas)
    assert (pixels[2:4, 2:6] == (1, 2, 3)).all()  # centred
    assert not border[2:4, 2:6].any() and border.sum() == 8 * 6 - 4 * 2


def test_draw_boxes_draws_on_a_copy_at_the_same_size():
    image = Image.new("RGB", (128, 64), (0, 0, 0))
    out = draw_boxes(image, [("cat", 0.9, (10.0, 20.0, 60.0, 50.0))])
    assert out.size == image.size and image.getpixel((10, 35)) == (0, 0, 0)
    assert out.getpixel((10, 35)) != (0, 0, 0)  # the box's left edge
    assert out.getpixel((35, 35)) == (0, 0, 0)  # its inside is not filled
