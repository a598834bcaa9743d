"""Issue 22, text in images: add_text and text_art write what they are given, legibly (read back by tesseract),
in Chinese too; text_art's glyphs reach the canny ControlNet as an edge map; bad arguments are one sentence."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image, ImageFilter

from benchmarks import text_ocr
from foundation_models import controlnet, text_render
from foundation_models.text_render import Style, TextRenderer
from orchestrator.toolbox.control import generation_size


def _tesseract_missing() -> str | None:
    if shutil.which("tesseract") is None:
        return (
            "tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-chi-sim; CI installs it)"
        )
    try:
        import pytesseract
    except ImportError:
        return "pytesseract is not installed (pip install -e '.[dev]')"
    missing = {"eng", "chi_sim"} - set(pytesseract.get_languages())
    return (
        f"tesseract has no {', '.join(sorted(missing))} data (apt-get install tesseract-ocr-chi-sim)"
        if missing
        else None
    )


needs_ocr = pytest.mark.skipif(_tesseract_missing() is not None, reason=str(_tesseract_missing()))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return text_ocr.tiny_session(str(tmp_path_factory.mktemp("text")))


@needs_ocr
@pytest.mark.parametrize("script", ["en", "zh"])
def test_add_text_is_read_back_by_ocr(session, script):
    """20 English and 26 Chinese strings, 24-72 px, five colour schemes: at least 20 read exactly."""
    readings = [
        text_ocr.read_add_text(session, s, t, i) for i, (s, t) in enumerate(text_ocr.strings()) if s == script
    ]
    exact = [r for r in readings if r.exact]
    assert len(exact) >= 20, text_ocr.table(readings)
    assert sum(r.accuracy for r in readings) / len(readings) >= 0.95, text_ocr.table(readings)


@needs_ocr
@pytest.mark.parametrize("script", ["en", "zh"])
def test_text_art_letters_stay_legible_over_noise(session, script):
    """26 English and 26 Chinese logos, 45-354 px: tiny weights make noise around the letters; at least 20 of each
    script are read back exactly all the same."""
    readings = [
        text_ocr.read_text_art(session, s, t, i) for i, (s, t) in enumerate(text_ocr.strings()) if s == script
    ]
    assert len([r for r in readings if r.exact]) >= 20, text_ocr.table(readings)
    assert sum(r.accuracy for r in readings) / len(readings) >= 0.95, text_ocr.table(readings)


def test_text_art_conditions_the_canny_controlnet_on_the_glyph_edges(session, monkeypatch):
    seen = []
    # the tool's calls may be batched across sessions: every map reaches the ControlNet through generate_batch
    generate = controlnet.ControlNetText2Image.generate_batch

    def spy(self, pictures, *args, **kwargs):
        seen.extend(p.image for p in pictures)
        return generate(self, pictures, *args, **kwargs)

    monkeypatch.setattr(controlnet.ControlNetText2Image, "generate_batch", spy)
    call = session.call_tool("text_art", {"text": "AI 实验室", "prompt": "neon letters", "width": 512,
                                          "height": 256, "seed": 5})  # fmt: skip
    assert call.error is None, call.error
    (condition,) = seen
    working = generation_size((512, 256), 64)
    assert condition.size == working, "the map is at the ControlNet's working size (tiny: 64 px)"
    edges = np.asarray(condition.convert("L"))
    assert set(np.unique(edges)) <= {0, 255} and 0 < (edges == 255).mean() < 0.5, "a Canny edge map"
    glyphs = TextRenderer().glyph_map((512, 256), "AI 实验室", Style())
    near = (
        np.asarray(glyphs.mask.resize(working, Image.Resampling.LANCZOS).filter(ImageFilter.MaxFilter(5))) > 0
    )
    assert (edges[~near] == 0).all(), "every edge is a letter's edge"

    out = np.asarray(session.images.open(call.images[0]).convert("L"), dtype=float)
    assert out.shape == (256, 512), "the picture is as large as asked, not the ControlNet's size"
    letters = np.asarray(glyphs.mask) > 200
    assert abs(out[letters].mean() - out[~letters].mean()) > 40, (
        "the letters stand out from what is around them"
    )
    models = {s.card: s.loads for s in session.orchestrator.manager.status()}
    assert models["CannyText2Image"] == 1 and models["TextRendering"] == 1 and models["TextArt"] == 0


def test_add_text_places_wraps_and_shrinks(session):
    picture = session.upload(Image.new("RGB", (320, 192), "navy"), "navy.png")
    width, height = session.images.open(picture).size
    call = session.call_tool(
        "add_text", {"image": picture, "text": "Top left", "position": "top-left", "size": 24}
    )
    x0, y0, _, _ = text_ocr.drawn_box(call.output)
    assert x0 < 30 and y0 < 30, call.output
    call = session.call_tool(
        "add_text", {"image": picture, "text": "centre", "x": 0.75, "y": 0.25, "size": 20}
    )
    x0, y0, x1, y1 = text_ocr.drawn_box(call.output)
    assert abs((x0 + x1) / 2 - 0.75 * width) < 4 and abs((y0 + y1) / 2 - 0.25 * height) < 4, call.output
    long = "A sentence far too long for one line of this small picture, so it wraps"
    call = session.call_tool("add_text", {"image": picture, "text": long, "size": 400})
    x0, y0, x1, y1 = text_ocr.drawn_box(call.output)
    assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height and "line(s)" in call.output
    assert "did not fit at size 400" in call.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"image": "image/00000000.png", "text": "hi"}, "no image named"),
        ({"text": "   "}, "needs some text to write"),
        ({"text": "hi", "color": "sunset-ish"}, "'sunset-ish' (color) is not a colour"),
        ({"text": "hi", "outline_color": "blurple"}, "'blurple' (outline_color) is not a colour"),
        ({"text": "hi", "x": 250}, "x is a fraction of the picture"),
        ({"text": "hi", "size": 0}, "size is the letters' height"),
        ({"text": "hi", "position": "middle-ish"}, "must be one of center"),
    ],
)
def test_bad_arguments_are_one_sentence(session, args, says):
    picture = session.upload(Image.new("RGB", (128, 128), "white"), "white.png")
    call = session.call_tool("add_text", {"image": picture, **args})
    assert call.error and says in call.error and call.error.count(". ") <= 1, call.error


def test_an_unknown_font_or_script_falls_back_with_a_note(session):
    picture = session.upload(Image.new("RGB", (256, 128), "white"), "white.png")
    call = session.call_tool("add_text", {"image": picture, "text": "你好", "font": "Comic Nonesuch"})
    assert call.error is None and "no font family 'Comic Nonesuch'" in call.output, call.output
    call = session.call_tool("add_text", {"image": picture, "text": "你好", "font": "DejaVu Sans"})
    if "DejaVu Sans" in call.output.split("Note:")[0]:
        pytest.skip("this DejaVu Sans has CJK glyphs")
    assert "DejaVu Sans has no glyph for some of the text" in call.output, call.output
    call = session.call_tool(
        "add_text", {"image": picture, "text": "\U00013000 ok"}
    )  # an Egyptian hieroglyph
    assert call.error is None and "No installed font can draw '\U00013000'" in call.output, call.output


def test_without_any_font_pillows_own_draws_and_says_what_it_cannot(monkeypatch):
    monkeypatch.setattr(text_render, "fc_match", lambda family: None)
    monkeypatch.setattr(text_render, "fc_covering", lambda chars: [])
    monkeypatch.setattr(text_render, "KNOWN_FILES", {})
    drawn = TextRenderer().draw(Image.new("RGB", (256, 128)), "Hi 你好", Style(size=30))
    assert drawn.font == text_render.BUILTIN and np.asarray(drawn.mask).any()
    assert any("No installed font can draw '你好'" in note for note in drawn.notes), drawn.notes


def test_missing_glyphs_are_found_by_the_notdef_check():
    dejavu = TextRenderer().find("DejaVu Sans")
    if dejavu is None:
        pytest.skip("DejaVu Sans is not installed")
    assert text_render.missing_glyphs(dejavu.at(20), "Aé 中文 A") == ["中", "文"]
