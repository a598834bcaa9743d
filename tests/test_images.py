"""The image store: validated uploads, names, lineage, and no way out of the session folder."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from orchestrator.errors import ImageError
from orchestrator.images import NAME, ImageLimits, ImageStore


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "session")


def png_bytes(size=(300, 200), mode="RGB", color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else None).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_is_stored_rgb_resized_to_multiples_of_64_with_aspect_kept(store):
    name = store.add_upload(png_bytes((300, 200)), "holiday.png")
    assert NAME.match(name)
    image = store.open(name)
    assert image.mode == "RGB"
    assert image.size == (512, 320)  # long side 512; 341.3 rounds to 320 (a multiple of 64)
    assert (store.root / name).is_file()
    record = store.lineage(name)
    assert record.tool == "upload" and record.source == "holiday.png"


def test_portrait_and_tiny_images(store):
    assert store.open(store.add_upload(png_bytes((100, 1000)))).size == (64, 512)
    assert store.open(store.add_upload(png_bytes((10, 10)))).size == (512, 512)


def test_exif_rotation_is_applied(store):
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (400, 200), (0, 128, 255)).save(buf, format="JPEG", exif=exif)
    name = store.add_upload(buf.getvalue(), "phone.jpg")
    assert store.open(name).size == (256, 512)  # stored upright: portrait


def test_transparency_becomes_white(store):
    buf = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(buf, format="PNG")
    image = store.open(store.add_upload(buf.getvalue()))
    assert image.getpixel((10, 10)) == (255, 255, 255)


def test_sixteen_bit_and_cmyk(store):
    buf = io.BytesIO()
    Image.fromarray(np.linspace(0, 65535, 64 * 64, dtype=np.uint16).reshape(64, 64)).save(buf, format="PNG")
    gray = np.asarray(store.open(store.add_upload(buf.getvalue())))
    assert gray.min() < 20 and gray.max() > 235  # the full 16-bit range maps onto 8 bits
    buf = io.BytesIO()
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(buf, format="JPEG")
    r, g, b = store.open(store.add_upload(buf.getvalue())).getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is a text file, renamed .png", "is not an image this app can read"),
        (png_bytes((640, 480))[:400], "could not be decoded"),
        (b"", "is not an image"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_stored(store, data, message):
    with pytest.raises(ImageError, match=message):
        store.add_upload(data, "notes.png")
    assert store.names() == []
    assert list((store.root / "image").iterdir()) == []


def test_limits(tmp_path):
    store = ImageStore(tmp_path, ImageLimits(max_upload_bytes=1000, max_upload_pixels=10_000, max_images=2))
    with pytest.raises(ImageError, match="the limit is 0 MB|MB; the limit"):
        store.add_upload(b"x" * 2000)
    with pytest.raises(ImageError, match="pixels; the limit is 10,000 pixels"):
        store.add_upload(png_bytes((200, 200), color=(0, 0, 0)))
    small = png_bytes((50, 50), color=(0, 0, 0))
    store.add_upload(small)
    store.add_upload(small)
    with pytest.raises(ImageError, match="already holds 2 images"):
        store.add_upload(small)


def test_decompression_bomb_is_refused(store):
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, format="PNG")  # 400 MP, a few KB on disk
    with pytest.raises(ImageError, match="too many pixels to open safely; the limit is 40,000,000 pixels"):
        store.add_upload(buf.getvalue())


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "image/../../secret.png",
        "image/zzzzzzzz.png",
        "https://x/a.png",
        42,
    ],
)
def test_names_outside_the_store_are_refused(store, name):
    store.add_upload(png_bytes())
    with pytest.raises(ImageError, match="no image named|must be given by its name"):
        store.resolve(name)


def test_name_forms_a_model_might_use(store):
    name = store.add_upload(png_bytes())
    short = name.removeprefix("image/")
    assert store.resolve(short) == name
    assert store.resolve(short.removesuffix(".png")) == name
    assert store.resolve(f"'{name}'") == name


def test_generated_images_record_lineage_in_json(store):
    parent = store.add_upload(png_bytes())
    child = store.add(
        Image.new("RGB", (64, 64)), tool="image2canny", args={"image": parent}, parents=[parent], seed=7
    )
    assert store.latest == child
    records = json.loads((store.root / "lineage.json").read_text())
    assert [r["name"] for r in records] == [parent, child]
    assert records[1] | {"created": 0} == {
        "name": child, "tool": "image2canny", "args": {"image": parent}, "parents": [parent], "seed": 7,
        "size": [64, 64], "created": 0, "source": None, "verdict": None,
    }  # fmt: skip


def test_upload_from_path_and_missing_path(store, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes())
    assert store.lineage(store.add_upload(path)).source == "photo.png"
    with pytest.raises(ImageError, match="no file"):
        store.add_upload(tmp_path / "nope.png")
