"""Hostile input, fuzzed: uploads, tool arguments and load specs end in a clear message, never a crash,
never a file outside the session folder, and the session stays usable."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from orchestrator.cards import load_cards
from orchestrator.devices import CPU, cuda_device
from orchestrator.errors import ImageError, SpecError
from orchestrator.images import NAME, ImageStore
from orchestrator.placement import make_plan
from orchestrator.spec import parse_budgets, parse_load_spec
from orchestrator.tools import ImageName, ToolContext, tool

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CARDS = load_cards()


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def sample_images() -> list[tuple[str, bytes]]:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    frames = [Image.new("P", (40, 30), i) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    out = [
        ("rgb.png", encode(rgb, "PNG")),
        ("rgb.jpg", encode(rgb, "JPEG")),
        ("anim.gif", gif.getvalue()),
        ("gray16.png", encode(Image.fromarray(np.full((30, 30), 40000, np.uint16)), "PNG")),
        ("cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG")),
        ("alpha.png", encode(rgb.convert("RGBA"), "PNG")),
        ("la.png", encode(rgb.convert("LA"), "PNG")),
        ("bilevel.png", encode(rgb.convert("1"), "PNG")),
        ("webp.webp", encode(rgb, "WEBP")),
        ("bmp.bmp", encode(rgb, "BMP")),
    ]
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        out.append((f"exif{orientation}.jpg", encode(rgb, "JPEG", exif=exif)))
    return out


SAMPLES = sample_images()


@pytest.mark.parametrize(("filename", "data"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_every_image_kind_is_stored_as_rgb_multiple_of_64(tmp_path, filename, data):
    store = ImageStore(tmp_path)
    image = store.open(store.add_upload(data, filename))
    assert image.mode == "RGB"
    assert image.size[0] % 64 == 0 and image.size[1] % 64 == 0 and max(image.size) == 512
    w, h = image.size
    portrait = filename.startswith("exif") and int(filename[4]) >= 5  # orientations 5-8 swap the sides
    assert (h > w) == portrait


@FAST
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_refused_cleanly(tmp_path, data):
    store = ImageStore(tmp_path / "s")
    try:
        name = store.add_upload(data, "random.png")
    except ImageError as exc:
        assert str(exc).count("\n") == 0
        assert store.names() == []
    else:  # a few byte strings are valid images (e.g. tiny netpbm); those must be stored properly
        assert NAME.match(name)
    assert files_under(tmp_path) == files_under(tmp_path / "s")


@FAST
@given(cut=st.integers(min_value=1, max_value=99), which=st.sampled_from(SAMPLES[:2]))
def test_truncated_files_are_refused_and_nothing_is_stored(tmp_path, cut, which):
    store = ImageStore(tmp_path / f"s{cut}")
    data = which[1][: len(which[1]) * cut // 100]
    with pytest.raises(ImageError):
        store.add_upload(data, which[0])
    assert store.names() == []


@tool(card="Text2Image")
def echo(
    ctx: ToolContext,
    image: Annotated[ImageName, "an image"],
    text: Annotated[str, "some text"] = "",
    count: Annotated[int, "a number"] = 1,
    scale: Annotated[float, "a scale"] = 1.0,
) -> str:
    """Echo the arguments back, and save a copy of the image."""
    return ctx.save(ctx.open(image), parents=[image])


hostile_strings = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["../../etc/passwd", "/etc/passwd", "C:\\Windows\\win.ini", "file:///etc/passwd",
                     "https://example.com/cat.png", "image/../../../x.png", "image/%2e%2e/x.png", "\x00", "‮gnp.",
                     "image/" + "a" * 5000, "~/.ssh/id_rsa", "$(rm -rf /)", "image\\..\\x.png"]),
)  # fmt: skip
hostile_values = st.one_of(hostile_strings, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
                           st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))  # fmt: skip


@pytest.fixture(scope="module")
def tool_session(tmp_path_factory):
    from orchestrator.engine import Orchestrator

    orch = Orchestrator("Image2Canny_cpu", weights="tiny", session_root=tmp_path_factory.mktemp("sessions"))
    orch.tools = {"echo": echo}
    session = orch.new_session()
    session.upload(Image.new("RGB", (64, 64), (10, 20, 30)))
    return session


@FAST
@given(
    args=st.dictionaries(
        st.sampled_from(["image", "text", "count", "scale", "extra", "../x"]), hostile_values, max_size=5
    )
)
def test_hostile_tool_arguments_are_observations(tool_session, args):
    before = files_under(tool_session.folder)
    call = tool_session.call_tool("echo", args)
    if call.error is None:
        assert call.images and all(NAME.match(n) for n in call.images)
    else:
        assert call.output.startswith("Error: ") and "Traceback" not in call.error
    after = files_under(tool_session.folder)
    assert all(tool_session.folder in p.parents for p in after)
    new = after - before - {tool_session.folder / "lineage.json"}
    assert len(new) == len(call.images)


@FAST
@given(args=hostile_values)
def test_non_mapping_arguments_and_unknown_tools(tool_session, args):
    assert tool_session.call_tool("echo", args).error
    assert "available tools: echo" in tool_session.call_tool("no_such_tool", args).error


@FAST
@given(spec=st.text(max_size=80), budget=st.text(max_size=30))
def test_random_load_specs_are_one_sentence_errors(spec, budget):
    devices = [CPU, cuda_device(0, 24_000)]
    try:
        make_plan(CARDS, parse_load_spec(spec, CARDS), devices, parse_budgets(budget))
    except SpecError as exc:
        assert str(exc) and "\n" not in str(exc) and "Traceback" not in str(exc)


@FAST
@given(
    spec=st.lists(
        st.tuples(
            st.sampled_from(CARDS.names()),
            st.sampled_from(["cpu", "cuda", "cuda:0", "cuda:1", "auto", "mps"]),
        ),
        min_size=1,
        max_size=6,
        unique_by=lambda t: t[0],
    )
)
def test_valid_names_on_any_device_plan_or_refuse_clearly(spec):
    text = ",".join(f"{n}_{d}" for n, d in spec)
    try:
        plan = make_plan(CARDS, parse_load_spec(text, CARDS), [CPU, cuda_device(0, 8_000)], {})
    except SpecError as exc:
        assert "cuda:1" in str(exc) or "mps" in str(exc) or "needs" in str(exc)
    else:
        assert set(plan.placements) >= {n for n, _ in spec}


def test_full_disk_when_saving_is_a_clear_error_and_nothing_is_lost(tmp_path, monkeypatch):
    store = ImageStore(tmp_path)
    first = store.add_upload(encode(Image.new("RGB", (64, 64)), "PNG"))

    def no_space(self, fp, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", no_space)
    with pytest.raises(
        ImageError, match="Could not save image/.*No space left on device; nothing was stored"
    ):
        store.add_upload(Image.new("RGB", (64, 64)))
    monkeypatch.undo()
    assert store.names() == [first] and store.open(first).size == (512, 512)
    assert [p.name for p in (tmp_path / "image").iterdir()] == [first.removeprefix("image/")]
    assert os.path.getsize(tmp_path / "lineage.json") > 0


@FAST
@given(argv=st.lists(st.one_of(st.sampled_from(["plan", "tools", "--load", "--max-vram", "--json", "--weights",
                                                 "tiny", "Text2Image_cpu", "cuda:0=1GiB", "--model-dir", "-v"]),
                               st.text(max_size=20)), max_size=6))  # fmt: skip
def test_random_command_lines_exit_0_1_or_2(argv, capsys):
    from orchestrator.cli import main

    assert main(argv) in (0, 1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err
