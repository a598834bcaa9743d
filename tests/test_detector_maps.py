"""The maps detectors make, checked on pictures whose right answer is known (no model weights needed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from foundation_models.depth import depth_image, normal_image
from foundation_models.detectors import Canny, detection_input, scribble_from_edges
from foundation_models.segmentation import ADE20K_PALETTE, colorize
from orchestrator.toolbox.control import as_scribble, generation_size

skimage_data = pytest.importorskip("skimage.data")


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Distance in pixels from every pixel to the nearest True pixel of ``mask``."""
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)


def _rectangle(width: int = 256, height: int = 128, box: tuple[int, int, int, int] = (64, 32, 192, 96)):
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = 255
    border = np.zeros((height, width), dtype=bool)
    border[y0:y1, x0:x1] = True
    border &= ~cv2.erode(border.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return Image.fromarray(pixels), border


# -- Canny ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution", [None, 64])
def test_canny_edges_lie_on_a_rectangles_border(resolution: int | None) -> None:
    image, border = _rectangle()
    edges = np.asarray(Canny(100, 200, resolution)(image))
    assert edges.shape == (128, 256, 3) and set(np.unique(edges)) == {0, 255}  # white on black, input size
    assert (edges == edges[:, :, :1]).all()  # grey
    on = edges[:, :, 0] == 255
    tolerance = 1.5 if resolution is None else 3.5  # detected at half size, then scaled back
    assert _distance_to(border)[on].max() <= tolerance  # nothing inside the box or out in the black
    assert (_distance_to(on)[border] <= tolerance).mean() > 0.95  # the whole outline is found


def test_canny_on_a_photo_finds_the_strong_edges() -> None:
    from skimage.feature import canny as skimage_canny

    camera = skimage_data.camera()
    edges = np.asarray(Canny(100, 200)(Image.fromarray(camera).convert("RGB")))[:, :, 0] == 255
    assert 0.02 < edges.mean() < 0.2
    gray = camera.astype(np.float32)
    gradient = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    assert gradient[edges].mean() > 4 * gradient[~edges].mean()
    reference = skimage_canny(camera, sigma=1.0)  # an independent implementation agrees within a pixel
    assert (_distance_to(reference)[edges] <= 1.5).mean() > 0.85


def test_detection_input_sizes_the_short_side_in_multiples_of_64() -> None:
    photo = Image.fromarray(skimage_data.astronaut()).resize((300, 200))
    assert detection_input(photo).shape == (192, 320, 3)  # its own size, rounded to multiples of 64
    assert detection_input(photo, 64).shape == (64, 128, 3)
    assert detection_input(photo, 128).shape == (128, 192, 3)


# -- scribbles --------------------------------------------------------------------------------------
def test_scribble_keeps_strong_edges_as_white_strokes_and_drops_faint_ones() -> None:
    columns = np.arange(96, dtype=np.float32)
    strong = np.tile(255 * np.exp(-((columns - 40) ** 2) / 8), (96, 1)).astype(np.uint8)
    strokes = scribble_from_edges(strong)
    assert set(np.unique(strokes)) == {0, 255}
    white = strokes == 255
    assert white[:, 40].all()
    assert np.abs(np.nonzero(white)[1] - 40).max() <= 8  # a stroke along the ridge, nothing elsewhere
    faint = (strong * 0.4).astype(np.uint8)  # below the 127 threshold of ControlNet's scribble NMS
    assert not scribble_from_edges(faint).any()


def test_a_dark_on_light_sketch_becomes_white_strokes_on_black() -> None:
    sketch = np.full((64, 64, 3), 255, dtype=np.uint8)
    sketch[30:34, 8:56] = 0
    strokes = np.asarray(as_scribble(Image.fromarray(sketch)))
    assert strokes[31, 20].tolist() == [255, 255, 255] and strokes[5, 5].tolist() == [0, 0, 0]
    already = Image.fromarray(255 - sketch)
    assert as_scribble(already) is already


# -- depth and normals ------------------------------------------------------------------------------
def test_depth_image_stretches_near_to_white_and_far_to_black() -> None:
    depth = np.tile(np.linspace(2.0, 7.0, 64, dtype=np.float32), (32, 1))
    pixels = np.asarray(depth_image(depth))
    assert pixels.shape == (32, 64, 3) and (pixels == pixels[:, :, :1]).all()
    assert pixels[0, 0, 0] == 0 and pixels[0, -1, 0] == 255
    assert (np.diff(pixels[0, :, 0].astype(int)) >= 0).all()
    assert not np.asarray(depth_image(np.full((8, 8), 3.0, np.float32))).any()  # flat: no crash, all black


def test_normals_of_a_ramp_point_along_its_slope() -> None:
    depth = np.tile(np.arange(64, dtype=np.float32), (32, 1))  # nearer (larger) to the right
    normal = np.asarray(normal_image(depth, background_threshold=0.4)).astype(int)
    inner = normal[2:-2, 30:-2]
    assert (inner[:, :, 0] > 200).all()  # x points along the slope
    assert (np.abs(inner[:, :, 1] - 127.5) <= 1).all()  # no vertical slope
    assert (inner[:, :, 2] > 150).all()
    background = normal[:, :20]  # relative depth under 0.4: facing the viewer
    assert (np.abs(background[:, :, :2] - 127.5) <= 1).all() and (background[:, :, 2] == 255).all()


def test_normals_of_a_sphere_follow_its_gradient() -> None:
    y, x = np.mgrid[0:96, 0:96].astype(np.float32)
    depth = np.sqrt(np.clip(40.0**2 - (x - 48) ** 2 - (y - 48) ** 2, 0, None)) + 1.0
    normal = np.asarray(normal_image(depth, background_threshold=0.4)).astype(int)
    r, g = normal[:, :, 0], normal[:, :, 1]
    assert r[48, 28] > 150 and r[48, 68] < 105  # depth rises towards the middle from the left, falls after
    assert g[28, 48] > 150 and g[68, 48] < 105  # and the same from the top
    assert abs(r[48, 28] - 127.5) == pytest.approx(abs(r[48, 68] - 127.5), abs=2)  # symmetric
    assert abs(r[48, 48] - 127.5) <= 2 and abs(g[48, 48] - 127.5) <= 2  # the top faces the viewer
    assert normal[2, 2].tolist() == [127, 127, 255]  # background


# -- segmentation colours ---------------------------------------------------------------------------
def test_segmentation_uses_controlnets_ade20k_palette() -> None:
    from controlnet_aux.util import ade_palette

    assert ADE20K_PALETTE.shape == (150, 3)
    assert ADE20K_PALETTE.tolist() == ade_palette()
    labels = np.arange(150).reshape(10, 15)
    pixels = np.asarray(colorize(labels))
    assert pixels.shape == (10, 15, 3)
    assert pixels[0, 0].tolist() == [120, 120, 120]  # wall
    assert pixels[0, 2].tolist() == [6, 230, 230]  # sky
    assert (pixels.reshape(-1, 3) == ADE20K_PALETTE).all()


# -- ControlNet sizes -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "resolution", "expected"),
    [((512, 512), 512, (512, 512)), ((768, 512), 512, (512, 320)), ((128, 64), 512, (512, 256)),
     ((64, 128), 128, (64, 128)), ((512, 384), 64, (64, 64))],
)  # fmt: skip
def test_controlnet_draws_at_the_cards_resolution_keeping_the_aspect(size, resolution, expected) -> None:
    assert generation_size(size, resolution) == expected
