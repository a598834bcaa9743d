"""Text rendering: a family whose "model" is a font renderer — fonts found on the system, no weights.

``TextRenderer.draw`` writes text onto a picture (any script the installed fonts cover) and returns the
picture, a mask of the drawn letters and notes for what it had to change. Fonts are found through fontconfig
(``fc-match``, ``fc-list``) or at known Debian paths, in the card's ``fonts`` order (by default Noto Sans CJK SC,
WenQuanYi Micro Hei, DejaVu Sans), then any installed font that has the missing characters, then Pillow's
built-in font; a character no font has is named in a note, never a crash. Text that does not fit is wrapped,
then shrunk. ``docs/text-in-images.md`` has the whole story.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .family import Family

FALLBACK_FONTS = ("Noto Sans CJK SC", "WenQuanYi Micro Hei", "DejaVu Sans")
# Where Debian's packages put them (fonts-noto-cjk, fonts-wqy-microhei, fonts-dejavu-core), for a machine
# without fontconfig's tools: (file, face index in a collection).
KNOWN_FILES = {
    "noto sans cjk sc": ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),
    "wenquanyi micro hei": ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    "dejavu sans": ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 0),
}
GENERIC = {"sans", "sans-serif", "serif", "monospace", "mono"}  # fontconfig answers these with any family
BUILTIN = "Pillow's built-in font"
MIN_SIZE = 8  # px: text shrunk to fit stops here
MARGIN = 0.04  # of the short side, kept free around the text
NOTDEF = "\U0010ffff"  # a noncharacter no font maps: its glyph is the font's .notdef box
# Scripts written without spaces: a line may break between any two of their characters.
UNSPACED = re.compile(
    r"[\u2e80-\u9fff\u3000-\u303f\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff]"
)
TOKEN = re.compile(rf"\s+|{UNSPACED.pattern}|[^\s{UNSPACED.pattern[1:-1]}]+")


@dataclass(frozen=True)
class Font:
    """One face of a font file (``path`` None: Pillow's built-in font)."""

    family: str
    path: str | None = None
    index: int = 0

    def at(self, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        if self.path is None:
            return ImageFont.load_default(size)
        return ImageFont.truetype(self.path, size, index=self.index)


@dataclass(frozen=True)
class Style:
    """How to write: size in px (None: a tenth of the picture's height), RGB colours, the outline's width in px,
    a font family (None: the fallback order), and where: ``anchor`` places the text block in the free space
    (0 = left/top, 0.5 = centre, 1 = right/bottom), ``point`` (fractions of the width and height) puts its centre
    there instead, per axis."""

    size: int | None = None
    color: tuple[int, int, int] = (255, 255, 255)
    outline_width: int = 0
    outline_color: tuple[int, int, int] = (0, 0, 0)
    font: str | None = None
    anchor: tuple[float, float] = (0.5, 0.5)
    point: tuple[float | None, float | None] = (None, None)


@dataclass
class Rendered:
    image: Image.Image  # the picture with the text on it
    mask: Image.Image  # "L": 255 where the letters (and their outline) are
    font: str  # the family used
    size: int  # the font size used, px
    lines: list[str]
    box: tuple[int, int, int, int]  # where the text block is, px
    notes: list[str] = field(default_factory=list)  # one sentence each: what was changed, what cannot show


class TextRenderer:
    """Finds fonts (once per family) and draws text; owns no weights, so ``to`` moves nothing."""

    def __init__(self, fonts: Sequence[str] = FALLBACK_FONTS):
        self.fallback = tuple(fonts)
        self._found: dict[str, Font | None] = {}

    def to(self, device: str) -> None:
        """Nothing to move: fonts live in files."""

    # -- fonts ----------------------------------------------------------------------------------
    def find(self, family: str) -> Font | None:
        """The installed font of this family (fontconfig, else a known path), or None."""
        key = family.strip().casefold()
        if key not in self._found:
            self._found[key] = fc_match(family) or _known(key)
        return self._found[key]

    def font_for(self, text: str, family: str | None = None) -> tuple[Font, list[str]]:
        """The first font (``family``, then the fallback order, then a font fontconfig says has the characters,
        then Pillow's) with a glyph for every character of ``text``, and notes on what was not as asked."""
        requested = self.find(family) if family else None
        font, missing = self._covering(text, requested)
        notes = []
        if family and requested is None:
            notes.append(f"There is no font family '{family}' on this machine, so {font.family} was used.")
        elif requested is not None and font != requested:
            notes.append(f"{requested.family} has no glyph for some of the text, so {font.family} was used.")
        if missing:
            notes.append(f"No installed font can draw '{''.join(missing[:10])}', so those characters show as "
                         "boxes or blanks; install a font for that script (for Chinese: fonts-noto-cjk).")  # fmt: skip
        return font, notes

    def _covering(self, text: str, requested: Font | None) -> tuple[Font, list[str]]:
        """The first font with a glyph for every character, else the one missing the fewest (and those)."""
        chosen = [f for f in [requested, *map(self.find, self.fallback)] if f is not None]
        best = chosen[0] if chosen else Font(BUILTIN)  # a real font draws the rest better than Pillow's
        best_missing = missing_glyphs(best.at(16), text)
        for round_ in (chosen, None):
            for font in round_ if round_ is not None else fc_covering(best_missing):
                missing = missing_glyphs(font.at(16), text)
                if not missing:
                    return font, []
                if len(missing) < len(best_missing):
                    best, best_missing = font, missing
        return best, best_missing

    # -- drawing --------------------------------------------------------------------------------
    def draw(self, picture: Image.Image, text: str, style: Style, largest: bool = False,
             wrapped: bool = True) -> Rendered:  # fmt: skip
        """``text`` written on a copy of ``picture`` (see ``Style``), wrapped (unless not ``wrapped``) and shrunk
        to fit inside it; ``largest`` without a size: as large as fits, not a tenth of the height."""
        font, notes = self.font_for(text, style.font)
        width, height = picture.size
        margin = round(MARGIN * min(width, height))
        room = (max(1, width - 2 * margin), max(1, height - 2 * margin))
        asked = style.size or (room[1] if largest else max(MIN_SIZE, height // 10))
        size, lines, face, stroke, (w, h, left, top) = _fit(
            font, text, asked, room, style.outline_width, wrapped
        )
        if style.size and size < style.size:
            notes.append(f"The text did not fit at size {style.size}, so it was drawn at size {size} "
                         f"on {len(lines)} line(s).")  # fmt: skip
        x = _place(style.anchor[0], style.point[0], width, w, margin)
        y = _place(style.anchor[1], style.point[1], height, h, margin)
        align = "left" if style.anchor[0] == 0 else "right" if style.anchor[0] == 1 else "center"
        origin = (x - left, y - top)
        block = "\n".join(lines)
        out = picture.convert("RGB")  # a copy
        text_args = {"font": face, "spacing": size // 5, "align": align, "stroke_width": stroke}
        ImageDraw.Draw(out).text(
            origin, block, fill=style.color, stroke_fill=style.outline_color, **text_args
        )
        mask = Image.new("L", picture.size, 0)
        ImageDraw.Draw(mask).text(origin, block, fill=255, stroke_fill=255, **text_args)
        return Rendered(out, mask, font.family, size, lines, (x, y, x + w, y + h), notes)

    def glyph_map(self, size: tuple[int, int], text: str, style: Style) -> Rendered:
        """White letters on black at ``size``, as large as fit (without a size): a ControlNet condition's shapes.
        A logo stays on one line while its letters are at least an eighth of the height: a line break in a title
        is what people and OCR misread most."""
        plain = Style(style.size, (255, 255, 255), 0, (0, 0, 0), style.font, style.anchor, style.point)
        canvas = Image.new("RGB", size, (0, 0, 0))
        one_line = self.draw(canvas, text, plain, largest=True, wrapped=False)
        if one_line.size >= size[1] // 12 or "\n" in text:
            return one_line
        return self.draw(canvas, text, plain, largest=True)


# -- fonts ----------------------------------------------------------------------------------------
def fc_match(family: str) -> Font | None:
    """fontconfig's font for ``family`` when it is that family (fc-match always answers with something)."""
    if shutil.which("fc-match") is None:
        return None
    out = _run(["fc-match", "-f", "%{file}|%{index}|%{family}", family])
    file, _, rest = out.partition("|")
    index, _, families = rest.partition("|")
    names = [name.strip() for name in families.split(",") if name.strip()]
    wanted = family.strip().casefold()
    if not file or not Path(file).is_file() or not names:
        return None
    if wanted not in GENERIC and wanted not in {name.casefold() for name in names}:
        return None
    return Font(names[0], file, int(index or 0))


def fc_covering(chars: Sequence[str]) -> list[Font]:
    """Installed fonts that have every one of ``chars`` (fontconfig's charset query), at most three."""
    points = sorted({f"{ord(c):x}" for c in chars if _drawn(c)})[:40]
    if not points or shutil.which("fc-list") is None:
        return []
    found = sorted(set(_run(["fc-list", f":charset={' '.join(points)}", "--format", "%{file}|%{index}|%{family}\n"]).splitlines()))  # fmt: skip
    fonts = []
    for line in found[:3]:
        file, index, families = (line.split("|") + ["", ""])[:3]
        fonts.append(Font(families.split(",")[0] or Path(file).stem, file, int(index or 0)))
    return fonts


def _known(key: str) -> Font | None:
    if key in KNOWN_FILES and Path(KNOWN_FILES[key][0]).is_file():
        path, index = KNOWN_FILES[key]
        return Font(next(f for f in FALLBACK_FONTS if f.casefold() == key), path, index)
    return None


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _drawn(char: str) -> bool:
    """A character that should leave ink: not a space, control or combining mark."""
    return not char.isspace() and unicodedata.category(char)[0] not in ("C", "M", "Z")


def missing_glyphs(face: Any, text: str) -> list[str]:
    """The characters of ``text`` the font draws as its .notdef glyph (tofu), each once, in order."""
    notdef = _ink(face, NOTDEF)
    return [c for c in dict.fromkeys(text) if _drawn(c) and _ink(face, c) == notdef]


def _ink(face: Any, char: str) -> tuple[tuple[int, int], bytes]:
    mask = face.getmask(char)
    return mask.size, bytes(mask)


# -- layout ---------------------------------------------------------------------------------------
def _fit(font: Font, text: str, size: int, room: tuple[int, int], outline: int, wrapped: bool = True):
    """The largest size up to ``size`` at which the (wrapped) text fits in ``room``: (size, lines, face, stroke
    width, (width, height, left, top) of the block)."""
    asked = size
    size = min(size, 4 * room[1])  # anything larger cannot fit; skip the slow way down
    while True:
        face = font.at(size)
        stroke = min(round(outline * size / asked), size // 4) if outline else 0
        lines = wrap(text, face, room[0] - 2 * stroke) if wrapped else text.split("\n")
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        left, top, right, bottom = probe.multiline_textbbox((0, 0), "\n".join(lines), font=face,
                                                            spacing=size // 5, stroke_width=stroke)  # fmt: skip
        if (right - left <= room[0] and bottom - top <= room[1]) or size <= MIN_SIZE:
            return size, lines, face, stroke, (right - left, bottom - top, left, top)
        size = max(MIN_SIZE, int(size * 0.9))


def wrap(text: str, face: Any, width: int) -> list[str]:
    """Lines no wider than ``width``: breaks at spaces, between CJK characters, inside a word too long alone."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for token in TOKEN.findall(paragraph):
            pieces = list(token) if face.getlength(token) > width and not token.isspace() else [token]
            for piece in pieces:
                if not line or face.getlength(line + piece) <= width:
                    line += piece
                elif piece.isspace():
                    lines.append(line)
                    line = ""
                else:
                    lines.append(line.rstrip())
                    line = piece
        lines.append(line.rstrip())
    return lines


def _place(anchor: float, point: float | None, side: int, extent: int, margin: int) -> int:
    """The block's start on one axis: centred on ``point`` (a fraction of ``side``), else at ``anchor`` of the
    free space; kept inside the picture."""
    start = point * side - extent / 2 if point is not None else margin + anchor * (side - 2 * margin - extent)
    return round(min(max(start, 0), max(0, side - extent)))


def load(ctx: Any) -> TextRenderer:
    return TextRenderer(tuple(ctx.options.get("fonts", FALLBACK_FONTS)))


FAMILY = Family("text_render", load)  # no weights: the "model" is a font renderer over the system's fonts
