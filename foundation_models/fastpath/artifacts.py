"""Compiled code in one portable file, so that a restarted server (or a new machine) skips the cold compile.

Torch's mega-cache (``torch.compiler.save_cache_artifacts``) records every entry a process compiles *or loads*
from inductor's FX graph cache (with the Triton kernels bundled), AOT autograd's cache and the autotune cache.
``save`` writes them as one file when ``warmup`` ends; ``load`` hands them back to torch, which writes them into
the inductor cache folder, before the first compile of a process. The file names the GPU model and torch version
it was made with: code compiled for another one would only miss, so such a file is set aside with one log line.
It also lists the compile helper's jobs whose code it holds, so that the helper is not started again for them,
and holds the regions compiled ahead (precompiled.py; torch >= 2.11), with which a new process traces nothing.

    artifacts = CompiledArtifacts(folder=Path("~/.cache/visual-orchestrator/compiled"), cache_dir=inductor_dir)
    artifacts.load()          # once per process, before anything compiles (the compiler does it)
    artifacts.save(markers, regions)  # after warmup: everything this process compiled or loaded
    artifacts.regions         # after a load: the regions compiled ahead, key -> bytes (precompiled.py)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .inductor import active_cache_dir, use_inductor_cache

log = logging.getLogger(__name__)

MAGIC = b"visual-orchestrator compiled code v2\n"  # then one JSON line (the header), then torch's bytes, then
# each region compiled ahead, in the header's order ("regions": [[key, bytes], ...])
OLDER = b"visual-orchestrator compiled code v"
HELPER_MARKERS = "compile-helper"  # the folder of the helper's job markers inside the inductor cache


@dataclass(frozen=True)
class Outcome:
    """What a load or a save did: ``done`` (loaded / written), one sentence for the log or the warm-up output."""

    path: str
    done: bool
    message: str
    entries: int = 0


def machine(device: Any = None) -> dict[str, str]:
    """The GPU model (or "cpu") and torch version compiled code is good for."""
    import torch

    gpu = "cpu"
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        gpu = torch.cuda.get_device_name(device if device is not None else 0)
    return {"gpu": gpu, "torch": torch.__version__}


def _diffusers() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffusers")
    except PackageNotFoundError:
        return "none"


def file_name(key: dict[str, str]) -> str:
    """``nvidia-h100-80gb-hbm3-torch2.11.0-cu130.bin``: the default file's name for this GPU and torch."""
    slug = re.sub(r"[^a-z0-9.]+", "-", f"{key['gpu']}-torch{key['torch']}".lower()).strip("-")
    return f"{slug}.bin"


class CompiledArtifacts:
    """The compiled-code file of one fast path: ``file`` when given (``--compiled FILE``), else ``folder``/<GPU
    model and torch>.bin; None for both: no file. ``cache_dir`` is the inductor cache the code is loaded into."""

    def __init__(self, folder: Path | None = None, file: Path | None = None, cache_dir: Path | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.file = Path(file) if file is not None else None
        self.cache_dir = cache_dir
        self.loaded: Outcome | None = None  # the first load's outcome (a process loads once)
        self.regions: dict[str, bytes] = {}  # the loaded file's regions compiled ahead (precompiled.py)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.file is not None or self.folder is not None

    def path(self, device: Any = None) -> Path | None:
        if self.file is not None:
            return self.file
        return self.folder / file_name(machine(device)) if self.folder is not None else None

    def load(self, device: Any = None) -> Outcome | None:
        """Load the file into inductor's caches, once per process (later calls return the first outcome);
        None without a file to look for. A missing, damaged or mismatched file is one log line, never an error."""
        if not self.enabled:
            return None
        with self._lock:
            if self.loaded is None:
                self.loaded = self._load(device)
                level = logging.INFO if self.loaded.done or not self.loaded.message else logging.WARNING
                if self.loaded.message:
                    log.log(level, "%s", self.loaded.message)
            return self.loaded

    def save(self, helper_jobs: Iterable[str] = (), device: Any = None,
             regions: Mapping[str, bytes] | None = None) -> Outcome | None:  # fmt: skip
        """Write everything this process compiled or loaded to the file (replacing it), with the ``regions``
        compiled ahead (key -> bytes); None without a file."""
        path = self.path(device)
        if path is None:
            return None
        import torch

        with self._lock:
            saved = torch.compiler.save_cache_artifacts()
            if saved is None:
                return Outcome(
                    str(path), False, "Nothing was compiled in this process, so no compiled code was saved."
                )
            cache, info = saved
            entries = {kind: len(keys) for kind, keys in info.artifacts.items()}
            ahead = sorted((regions or {}).items())
            payload = cache + b"".join(blob for _, blob in ahead)
            header = {**machine(device), "diffusers": _diffusers(),
                      "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload), "entries": entries,
                      "cache_bytes": len(cache), "regions": [[key, len(blob)] for key, blob in ahead],
                      "helper_jobs": sorted(set(helper_jobs))}  # fmt: skip
            partial = path.with_name(f".{path.name}.{os.getpid()}.part")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)
                os.replace(partial, path)  # a reader never sees half a file
            except OSError as exc:
                partial.unlink(missing_ok=True)
                return Outcome(str(path), False, f"Could not write the compiled code to {path}: {exc}.")
        count = sum(entries.values())
        ahead_said = f" and {len(ahead)} regions compiled ahead" if ahead else ""
        return Outcome(str(path), True, f"Saved {count} compiled-code entries{ahead_said} ({len(payload) / 2**20:.1f} "
                                        f"MB) to {path}; a server started with it loads them instead of compiling.",
                       count)  # fmt: skip

    def _load(self, device: Any) -> Outcome:
        path = self.path(device)
        assert path is not None
        if not path.is_file():  # the default file is there only after a warmup; a named one should be
            said = f"No compiled-code file at {path}; compiling as usual." if self.file is not None else ""
            return Outcome(str(path), False, said)
        try:
            header, payload, regions = read(path)
        except ValueError as exc:
            return Outcome(
                str(path), False, f"{path} is not a usable compiled-code file ({exc}); compiling as usual."
            )
        here = machine(device)
        if (header.get("gpu"), header.get("torch")) != (here["gpu"], here["torch"]):
            return Outcome(str(path), False, f"{path} holds code compiled on {header.get('gpu')} with torch "
                                             f"{header.get('torch')}, not this {here['gpu']} with torch "
                                             f"{here['torch']}; compiling as usual.")  # fmt: skip
        diffusers = _diffusers()  # the regions compiled ahead hold code traced from its blocks
        if header.get("diffusers", diffusers) != diffusers:
            return Outcome(str(path), False, f"{path} holds code compiled with diffusers {header['diffusers']}, not "
                                             f"this {diffusers}; compiling as usual.")  # fmt: skip
        import torch

        use_inductor_cache(self.cache_dir)  # torch writes the entries into the folder inductor reads
        try:
            info = torch.compiler.load_cache_artifacts(payload)
        except Exception as exc:  # torch's own format from another build: its caches are as they were
            info, reason = None, f"{type(exc).__name__}: {exc}"
        else:
            reason = "torch could not read it"
        if info is None:
            return Outcome(str(path), False, f"{path} could not be loaded ({reason}); compiling as usual.")
        markers = active_cache_dir(self.cache_dir) / HELPER_MARKERS
        markers.mkdir(parents=True, exist_ok=True)
        for job in header.get("helper_jobs", []):
            if re.fullmatch(r"[0-9a-f]{32}", job):
                (markers / job).touch()  # the helper has nothing to add to these jobs: the caches hold them
        self.regions = regions
        count = sum(len(keys) for keys in info.artifacts.values())
        ahead_said = f" and {len(regions)} regions compiled ahead" if regions else ""
        return Outcome(str(path), True, f"Loaded {count} compiled-code entries{ahead_said} from {path} (compiled "
                                        f"{header.get('created')}).", count)  # fmt: skip


def read(path: Path) -> tuple[dict[str, Any], bytes, dict[str, bytes]]:
    """The header, torch's cache bytes and the regions compiled ahead (key -> bytes) of a compiled-code file;
    ValueError (one phrase) for anything else."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror or exc}") from None
    if not data.startswith(MAGIC):
        older = data.startswith(OLDER)  # v1: no regions compiled ahead; the next warmup writes a new one
        raise ValueError(
            "an older version of this program made it" if older else "it does not start as one does"
        )
    line, newline, payload = data[len(MAGIC) :].partition(b"\n")
    try:
        header = json.loads(line) if newline else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise ValueError("its header is damaged")
    if header.get("bytes") != len(payload) or header.get("sha256") != hashlib.sha256(payload).hexdigest():
        raise ValueError("it is cut short or damaged")
    cache_bytes = header.get("cache_bytes", len(payload))
    listed = header.get("regions", [])
    try:
        sizes = [(str(key), int(size)) for key, size in listed]
    except (TypeError, ValueError):
        raise ValueError("its header is damaged") from None
    if not isinstance(cache_bytes, int) or cache_bytes + sum(size for _, size in sizes) != len(payload):
        raise ValueError("its header is damaged")
    regions, at = {}, cache_bytes
    for key, size in sizes:
        regions[key], at = payload[at : at + size], at + size
    return header, payload[:cache_bytes], regions
