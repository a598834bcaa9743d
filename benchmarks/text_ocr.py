"""Issue 22: is the text that add_text and text_art write read back by a real OCR engine as the same characters?

Tesseract 5 (Debian's ``tesseract-ocr`` with ``-eng`` and ``-chi-sim``) reads each string's text block, cropped by
the box the tool reports and scaled so the letters are about 32 px high (what tesseract reads best). Character
accuracy is 1 - edit distance / length, whitespace ignored; "exact" counts strings read back character for
character. add_text writes on plain backgrounds in five colour schemes and five sizes; text_art runs the whole
tool (glyphs → Canny → the canny ControlNet → the composite) on tiny random weights, whose output is noise: the
worst background the letters could get.

    python -m benchmarks.text_ocr                # both tools, all strings (about a minute on 2 CPU cores)
    python -m benchmarks.text_ocr --tool add_text --photo   # add_text's default style on a drawn photo too
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

ENGLISH = [
    "OPEN", "Exit", "Thank you", "Room 42", "Good night", "Visual Lab", "Hello world", "No parking", "Welcome home",
    "Stay curious", "Sale 50% off", "Made in 2026", "Coffee & Cake", "Summer Festival", "Grand Opening Today",
    "Data beats opinions", "Happy Birthday, Anna!", "Keep calm and carry on", "Fresh bread every morning",
    "The quick brown fox jumps over the lazy dog",
    "Lab Open Day", "Night Market", "Open 24 hours", "Welcome to 2027", "Visual Orchestrator", "Tea for two",
]  # fmt: skip
CHINESE = [
    "谢谢", "出口", "你好", "早上好", "图书馆", "你好世界", "生日快乐", "欢迎光临", "禁止停车", "人工智能", "开业大吉",
    "小心地滑", "北京欢迎你", "视觉实验室", "学而时习之", "今天天气很好", "中华人民共和国", "机器学习研究组",
    "新年快乐万事如意", "春眠不觉晓处处闻啼鸟", "欢迎来到视觉实验室", "请勿吸烟", "加油", "一路平安", "恭喜发财", "注意安全",
]  # fmt: skip
SIZES = [24, 32, 40, 56, 72]
# (letters, background) for add_text; every scheme keeps the default black outline off except the last
SCHEMES = [("#141432", "#f5f0e1", 0), ("white", "#1e3c78", 0), ("#b41e1e", "white", 0), ("black", "#ffd23c", 0),
           ("white", "#3c6e3c", 2)]  # fmt: skip
CANVASES = [(768, 384), (512, 256), (1024, 384), (512, 512)]
LETTER_PX = 32  # the letter size tesseract is given
BOX = re.compile(r"at \((\d+), (\d+)\)-\((\d+), (\d+)\) px")


@dataclass(frozen=True)
class Reading:
    tool: str
    script: str  # "en" or "zh"
    text: str
    read: str
    size: int  # font size, px
    accuracy: float

    @property
    def exact(self) -> bool:
        return self.accuracy == 1.0


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def accuracy(expected: str, read: str) -> float:
    """1 - edit distance / length, whitespace ignored (tesseract puts spaces between Chinese characters)."""
    want, got = re.sub(r"\s", "", expected), re.sub(r"\s", "", read)
    return max(0.0, 1 - edit_distance(want, got) / len(want))


def ocr(picture: Image.Image, box: tuple[int, int, int, int], size: int, language: str) -> str:
    """Tesseract's reading of the text block ``box`` (padded by a twelfth of the letter size, which stays inside
    text_art's halo), grey, letters scaled to about LETTER_PX, binarised by Otsu's threshold."""
    import cv2
    import numpy as np
    import pytesseract

    pad = max(3, size // 12)
    x0, y0, x1, y1 = box
    crop = picture.crop((max(0, x0 - pad), max(0, y0 - pad), x1 + pad, y1 + pad)).convert("L")
    scale = LETTER_PX / size
    crop = crop.resize(
        (max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.LANCZOS
    )
    _, binary = cv2.threshold(np.asarray(crop), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return pytesseract.image_to_string(Image.fromarray(binary), lang="chi_sim" if language == "zh" else "eng",
                                       config="--psm 6")  # fmt: skip


def drawn_box(output: str) -> tuple[int, int, int, int]:
    found = BOX.search(output)
    assert found, f"no text box in the tool's answer: {output}"
    return tuple(int(v) for v in found.groups())  # type: ignore[return-value]


def drawn_size(output: str) -> int:
    found = re.search(r"size (\d+)", output)
    assert found, f"no font size in the tool's answer: {output}"
    return int(found.group(1))


def strings(english: list[str] = ENGLISH, chinese: list[str] = CHINESE) -> Iterator[tuple[str, str]]:
    yield from (("en", s) for s in english)
    yield from (("zh", s) for s in chinese)


def read_add_text(session, script: str, text: str, index: int, photo: str | None = None) -> Reading:
    """add_text on a plain background (colour scheme and size by ``index``), or in its default style on ``photo``."""
    if photo is None:
        letters, background, outline = SCHEMES[index % len(SCHEMES)]
        picture = session.upload(Image.new("RGB", (640, 384), background), "plain.png")
        args = {
            "color": letters,
            "outline_width": outline,
            "size": SIZES[(index // len(SCHEMES) + index) % len(SIZES)],
        }
    else:
        picture, args = photo, {"size": SIZES[index % len(SIZES)]}
    call = session.call_tool("add_text", {"image": picture, "text": text, **args})
    assert call.error is None, call.error
    size = drawn_size(call.output)
    read = ocr(session.images.open(call.images[0]), drawn_box(call.output), size, script)
    return Reading("add_text" if photo is None else "add_text (photo)", script, text, read.strip(), size,
                   accuracy(text, read))  # fmt: skip


def read_text_art(session, script: str, text: str, index: int) -> Reading:
    width, height = CANVASES[index % len(CANVASES)]
    call = session.call_tool("text_art", {"text": text, "prompt": "golden letters on marble", "width": width,
                                          "height": height, "seed": index})  # fmt: skip
    assert call.error is None, call.error
    size = drawn_size(call.output)
    read = ocr(session.images.open(call.images[0]), drawn_box(call.output), size, script)
    return Reading("text_art", script, text, read.strip(), size, accuracy(text, read))


def tiny_session(folder: str):
    """A session with the text cards on tiny weights and uploads kept at up to 1024 px."""
    from orchestrator.engine import Orchestrator
    from orchestrator.images import ImageLimits

    orchestrator = Orchestrator("TextRendering_cpu,TextArt_cpu", weights="tiny", brain="rules",
                                session_root=folder, image_limits=ImageLimits(max_side=1024))  # fmt: skip
    return orchestrator.new_session()


def table(readings: list[Reading]) -> str:
    lines = [
        "| tool | script | strings | read exactly | character accuracy | sizes (px) |",
        "|---|---|---:|---:|---:|---|",
    ]
    groups: dict[tuple[str, str], list[Reading]] = {}
    for r in readings:
        groups.setdefault((r.tool, r.script), []).append(r)
    for (tool, script), rows in groups.items():
        mean = sum(r.accuracy for r in rows) / len(rows)
        sizes = f"{min(r.size for r in rows)}–{max(r.size for r in rows)}"
        lines.append(
            f"| {tool} | {script} | {len(rows)} | {sum(r.exact for r in rows)} | {mean:.1%} | {sizes} |"
        )
    misses = [r for r in readings if not r.exact]
    if misses:
        lines += ["", "Not read exactly:", ""]
        lines += [
            f"- {r.tool}, {r.size} px: {r.text!r} read as {r.read!r} ({r.accuracy:.0%})" for r in misses
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=["add_text", "text_art", "both"], default="both")
    parser.add_argument("--photo", action="store_true", help="also add_text's default style on a drawn photo")
    args = parser.parse_args(argv)
    from orchestrator.warmup import synthetic_picture

    readings: list[Reading] = []
    with tempfile.TemporaryDirectory(prefix="text-ocr-") as folder:
        session = tiny_session(folder)
        for index, (script, text) in enumerate(strings()):
            if args.tool in ("add_text", "both"):
                readings.append(read_add_text(session, script, text, index))
            if args.tool in ("text_art", "both"):
                readings.append(read_text_art(session, script, text, index))
        if args.photo:
            photo = session.upload(synthetic_picture(512), "photo.png")
            readings += [read_add_text(session, s, t, i, photo) for i, (s, t) in enumerate(strings())]
    readings.sort(key=lambda r: (r.tool, r.script))
    print(table(readings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
