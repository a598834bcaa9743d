"""A stand-in for the Hugging Face hub on 127.0.0.1, for download tests that never touch the real one.

It serves what huggingface_hub and ``orchestrator.fetch`` ask for: ``/api/models/{repo}`` (with
``siblings``: size, blobId, lfs sha256) and ``/{repo}/resolve/{revision}/{path}`` (HEAD and GET with
ETag, X-Repo-Commit, X-Linked-Etag/Size, Content-Length and Range). A file can be made to stall or drop
the connection after N bytes, once, to test resuming. ``hub_environment`` points huggingface_hub at it.

    with FakeHub() as hub:
        hub.add_repo("org/name", {"config.json": b"{}", "model.safetensors": weights})
        hub_environment(monkeypatch, hub.url, tmp_path / "hub")
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pth", ".pt", ".h5", ".msgpack", ".onnx")


@dataclass
class Request:
    method: str
    path: str  # "org/name/file/path" for file requests, the URL path otherwise
    range: str | None


@dataclass
class FakeHub:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    stall_after: dict[str, int] = field(
        default_factory=dict
    )  # "org/name/path" -> bytes before stalling (once)
    drop_after: dict[str, int] = field(
        default_factory=dict
    )  # "org/name/path" -> bytes before hanging up (once)

    def __post_init__(self) -> None:
        self.release = threading.Event()  # set to end every stall
        self._server: ThreadingHTTPServer | None = None

    # -- content ----------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> None:
        self.repos[repo_id] = dict(files)

    def add_folder(self, repo_id: str, folder: Path, extra: dict[str, bytes] | None = None) -> None:
        files = {
            str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        }
        self.add_repo(repo_id, {**files, **(extra or {})})

    def commit(self, repo_id: str) -> str:
        digest = hashlib.sha1(repo_id.encode())
        for path, data in sorted(self.repos[repo_id].items()):
            digest.update(path.encode() + hashlib.sha256(data).digest())
        return digest.hexdigest()

    def gets(self, repo_id: str) -> list[Request]:
        """The GET requests for files of ``repo_id``."""
        return [r for r in self.requests if r.method == "GET" and r.path.startswith(repo_id + "/")]

    # -- serving ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start the hub first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def etag(path: str, data: bytes) -> str:
    if is_lfs(path):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"
    API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
    RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        url = unquote(urlparse(self.path).path)
        if match := self.API.match(url):
            self.fake.requests.append(Request(self.command, url, None))
            return self._info(match["repo"], match["rev"], body)
        if match := self.RESOLVE.match(url):
            key = f"{match['repo']}/{match['path']}"
            self.fake.requests.append(Request(self.command, key, self.headers.get("Range")))
            return self._file(match["repo"], match["rev"], match["path"], body)
        self._error(404, "EntryNotFound", f"no route {url}")

    def _info(self, repo_id: str, revision: str | None, body: bool) -> None:
        files = self.fake.repos.get(repo_id)
        if files is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        siblings = []
        for path, data in sorted(files.items()):
            entry: dict[str, Any] = {"rfilename": path, "size": len(data), "blobId": etag(path, data)}
            if is_lfs(path):
                entry["blobId"] = hashlib.sha1(
                    path.encode()
                ).hexdigest()  # the pointer's id, not the content's
                entry["lfs"] = {"size": len(data), "sha256": etag(path, data), "pointerSize": 134}
            siblings.append(entry)
        info = {"id": repo_id, "modelId": repo_id, "sha": self.fake.commit(repo_id), "private": False,
                "siblings": siblings}  # fmt: skip
        self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)

    def _file(self, repo_id: str, revision: str, path: str, body: bool) -> None:
        files = self.fake.repos.get(repo_id)
        if files is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        commit = self.fake.commit(repo_id)
        if revision not in ("main", commit):
            return self._error(404, "RevisionNotFound", f"Revision {revision} not found")
        if path not in files:
            return self._error(404, "EntryNotFound", f"{path} not found in {repo_id}")
        data = files[path]
        tag = etag(path, data)
        headers = {"ETag": f'"{tag}"', "X-Repo-Commit": commit, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}  # fmt: skip
        if is_lfs(path):
            headers.update({"X-Linked-Etag": f'"{tag}"', "X-Linked-Size": str(len(data))})
        start = _range_start(self.headers.get("Range"))
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        key = f"{repo_id}/{path}"
        cut = None
        if body and key in self.fake.stall_after:
            cut, stall = self.fake.stall_after.pop(key), True
        elif body and key in self.fake.drop_after:
            cut, stall = self.fake.drop_after.pop(key), False
        if cut is None:
            return self._send(status, data[start:], headers, body)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data) - start)}.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data[start:cut])
            self.wfile.flush()
            if stall:
                self.fake.release.wait(60)
        except OSError:  # the client was killed mid-file: what we are testing
            pass
        self.close_connection = True

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, {"Content-Type": "application/json", "X-Error-Code": code,
                                  "X-Error-Message": message}, True)  # fmt: skip

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


def _range_start(header: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "")
    return int(match[1]) if match else 0


def hub_environment(monkeypatch: Any, url: str, cache: Path) -> None:
    """Point huggingface_hub at ``url`` with ``cache`` as its cache, online, for one test.

    huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE into ``constants`` when it is
    first imported, so both the environment (for subprocesses) and the constants (for this process) change.
    """
    from huggingface_hub import constants

    env = {"HF_ENDPOINT": url, "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf-home"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)  # no token of the user's goes out


# -- repositories shaped like the real ones ---------------------------------------------------------
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
ANNOTATORS = "lllyasviel/Annotators"
DECOYS = {  # files the real repositories also hold, which the downloader must NOT fetch
    SD15: ["v1-5-pruned-emaonly.ckpt", "v1-5-pruned.safetensors", "v1-inference.yaml", "README.md",
           "unet/diffusion_pytorch_model.non_ema.safetensors", "unet/diffusion_pytorch_model.bin",
           "text_encoder/pytorch_model.bin", "safety_checker/config.json", "safety_checker/model.safetensors",
           "safety_checker/model.fp16.safetensors"],
    "lllyasviel/sd-controlnet-canny": ["diffusion_pytorch_model.bin", "README.md"],
    "Salesforce/blip-image-captioning-base": ["pytorch_model.bin", "tf_model.h5", "README.md"],
    ANNOTATORS: ["hand_pose_model.pth", "facenet.pth", "table5_pidinet.pth", "dpt_hybrid-midas-501f0c75.pt",
                 "sk_model.pth", "README.md"],
}  # fmt: skip
ANNOTATOR_FILES = ["ControlNetHED.pth", "mlsd_large_512_fp32.pth", "body_pose_model.pth"]


def decoy(path: str, size: int = 4096) -> bytes:
    return hashlib.sha256(path.encode()).digest() * (size // 32)


def hub_repo(repo_id: str) -> dict[str, bytes]:
    """The files of ``repo_id`` as the fake hub serves them: the tiny checkpoint, an fp16 variant next to
    each fp32 weights file of a pipeline (as the SD1.5 repositories have), and the decoys above."""
    files = {path: decoy(path) for path in DECOYS.get(repo_id, [])}
    if repo_id == ANNOTATORS:  # never loaded here: stand-in bytes keep the test light
        return {**files, **{name: decoy(name, 65536) for name in ANNOTATOR_FILES}}
    from orchestrator.weights import WeightResolver

    folder = WeightResolver("tiny").resolve(repo_id)
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            files[str(p.relative_to(folder))] = p.read_bytes()
    if (folder / "model_index.json").is_file():
        for comp in ("unet", "vae", "text_encoder"):
            for weights in (folder / comp).glob("*.safetensors"):
                files[f"{comp}/{weights.stem}.fp16.safetensors"] = _half(weights)
    return files


def _half(path: Path) -> bytes:
    from safetensors.torch import load_file, save

    return save({k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()})
