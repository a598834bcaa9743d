"""The session's image store: validated uploads, short random names, and a lineage record per image.

Images are referred to only by name (``image/1a2b3c4d.png``). A name that is not in this store is
refused, so a tool argument can never reach a file outside the session folder.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, shown

NAME = re.compile(r"^image/[0-9a-f]{8}\.png$")
MB = 2**20


@dataclass(frozen=True)
class ImageLimits:
    max_side: int = 512  # long side after resizing; both sides become multiples of 64
    max_upload_bytes: int = 20 * MB
    max_upload_pixels: int = 40_000_000
    max_images: int = 1000


@dataclass(frozen=True)
class Lineage:
    name: str
    tool: str  # "upload" for uploads
    args: dict[str, Any] = field(default_factory=dict)
    parents: tuple[str, ...] = ()
    seed: int | None = None
    size: tuple[int, int] = (0, 0)
    created: float = 0.0
    source: str | None = None  # the uploaded file's name
    verdict: dict[str, Any] | None = None  # what the check-and-retry loop found in it (refine.py)


class ImageStore:
    def __init__(self, root: str | Path, limits: ImageLimits | None = None):
        self.root = Path(root)
        self.limits = limits or ImageLimits()
        (self.root / "image").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lineage: dict[str, Lineage] = {}

    # -- reading -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every image name, oldest first."""
        return list(self._lineage)

    @property
    def latest(self) -> str | None:
        return next(reversed(self._lineage), None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._lineage

    def resolve(self, name: str) -> str:
        """The store's name for ``name`` (``1a2b3c4d.png`` and ``image/1a2b3c4d`` are accepted too)."""
        if not isinstance(name, str):
            raise ImageError(f"An image must be given by its name (a string), got {type(name).__name__}.")
        cleaned = name.strip().strip("'\"`")
        candidates = [cleaned, f"image/{cleaned}", f"{cleaned}.png", f"image/{cleaned}.png"]
        for candidate in candidates:
            if NAME.fullmatch(candidate) and candidate in self._lineage:
                return candidate
        available = ", ".join(self.names()[-10:]) or "none yet (upload one first)"
        raise ImageError(
            f"There is no image named '{shown(cleaned, 80)}' in this session; available: {available}."
        )

    def path(self, name: str) -> Path:
        return self.root / self.resolve(name)

    def open(self, name: str) -> Image.Image:
        with Image.open(self.path(name)) as img:
            return img.convert("RGB")

    def lineage(self, name: str) -> Lineage:
        return self._lineage[self.resolve(name)]

    # -- writing -------------------------------------------------------------------------------
    def add_upload(self, data: bytes | str | Path | Image.Image, filename: str | None = None) -> str:
        """Validate an upload (bytes, a path or a PIL image), normalise it, store it; returns its name."""
        if isinstance(data, (str, Path)):
            filename = filename or Path(data).name
            data = _read_upload(Path(data), self.limits.max_upload_bytes)
        image = data if isinstance(data, Image.Image) else self._decode(data, filename)
        image = to_rgb(ImageOps.exif_transpose(image) or image)
        image = resize_to_multiple_of_64(image, self.limits.max_side)
        return self._store(image, Lineage("", "upload", source=filename))

    def add(
        self, image: Image.Image, *, tool: str, args: dict[str, Any], parents: list[str], seed: int | None,
        name: str | None = None,
    ) -> str:  # fmt: skip
        """Store an image a tool made, with its lineage; returns its name (``name`` when it is free: an image
        made by a remote replica keeps the name its output text uses)."""
        parents = [self.resolve(p) for p in parents]
        return self._store(image.convert("RGB"), Lineage("", tool, dict(args), tuple(parents), seed), name)

    def _decode(self, data: bytes, filename: str | None) -> Image.Image:
        label = f"'{filename}'" if filename else "The upload"
        if len(data) > self.limits.max_upload_bytes:
            raise ImageError(
                f"{label} is {len(data) / MB:.1f} MB; the limit is {self.limits.max_upload_bytes / MB:.0f} MB."
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                w, h = image.size
                if w * h > self.limits.max_upload_pixels:
                    raise ImageError(
                        f"{label} is {w}×{h} pixels; the limit is {self.limits.max_upload_pixels:,} pixels."
                    )
                image.load()  # decodes now: a truncated file fails here, not in a tool
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(
                f"{label} has too many pixels to open safely; the limit is {self.limits.max_upload_pixels:,} pixels."
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(
                f"{label} is not an image this app can read; upload a PNG, JPEG, WebP, GIF or BMP file."
            ) from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(
                f"{label} could not be decoded, it may be truncated or damaged ({_reason(exc)})."
            ) from exc
        return image

    def _store(self, image: Image.Image, record: Lineage, wanted: str | None = None) -> str:
        with self._lock:
            if len(self._lineage) >= self.limits.max_images:
                raise ImageError(
                    f"This session already holds {self.limits.max_images} images, its limit; start a new session."
                )
            free = wanted and NAME.fullmatch(wanted) and wanted not in self._lineage
            name = wanted if free and not (self.root / wanted).exists() else self._new_name()
            path = self.root / name
            tmp = path.with_suffix(".tmp")
            try:
                image.save(tmp, format="PNG")
                os.replace(tmp, path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise ImageError(
                    f"Could not save {name}: {exc.strerror or exc}; nothing was stored."
                ) from exc
            record = Lineage(**{**asdict(record), "name": name, "size": image.size, "created": time.time()})
            self._lineage[name] = record
            self._write_lineage()
            return name

    def _new_name(self) -> str:
        while True:
            name = f"image/{secrets.token_hex(4)}.png"
            if name not in self._lineage and not (self.root / name).exists():
                return name

    def note_verdict(self, name: str, verdict: dict[str, Any]) -> None:
        """Record what a check of the image found (its round, score, what was missing) in its lineage."""
        name = self.resolve(name)
        with self._lock:
            self._lineage[name] = replace(self._lineage[name], verdict=dict(verdict))
            self._write_lineage()

    def _write_lineage(self) -> None:
        path = self.root / "lineage.json"
        tmp = path.with_suffix(".tmp")
        records = [asdict(r) for r in self._lineage.values()]
        try:
            tmp.write_text(json.dumps(records, indent=1))
            os.replace(tmp, path)
        except OSError:  # the image itself is stored; the record is rewritten with the next image
            tmp.unlink(missing_ok=True)


def _read_upload(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise ImageError(f"'{path.name}' is {size / MB:.1f} MB; the limit is {limit / MB:.0f} MB.")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"There is no file {path} to upload.") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{path} is a folder, not an image file.") from exc


def _reason(exc: Exception) -> str:
    text = re.sub(r"<[^>]* at 0x[0-9a-f]+>", "the file", str(exc).split("\n")[0])
    return shown(text, 120) or type(exc).__name__


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB on white for transparent images; 16-bit and CMYK images mapped to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).astype("uint8"), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def resize_to_multiple_of_64(image: Image.Image, max_side: int) -> Image.Image:
    """Scale so the long side is ``max_side``, then round both sides to multiples of 64 (aspect kept)."""
    w, h = image.size
    scale = max_side / max(w, h)
    new_w = max(64, int(round(w * scale / 64)) * 64)
    new_h = max(64, int(round(h * scale / 64)) * 64)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), Image.Resampling.LANCZOS)
