"""`download` and `weights` against a fake hub on 127.0.0.1: what lands on disk, progress, resume, readiness."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_hub import ANNOTATORS, DECOYS, SD15, FakeHub, hub_environment, hub_repo

from orchestrator.cards import load_cards
from orchestrator.cli import weights as cli_weights
from orchestrator.download import readiness
from orchestrator.engine import Orchestrator
from orchestrator.weights import WeightResolver

ROOT = Path(__file__).resolve().parents[1]
CANNY = "lllyasviel/sd-controlnet-canny"
BLIP = "Salesforce/blip-image-captioning-base"
UNET_FP16 = "unet/diffusion_pytorch_model.fp16.safetensors"
SD_SELECTED = {
    "model_index.json", "scheduler/scheduler_config.json", "unet/config.json", UNET_FP16,
    "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
    "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
    "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
}  # fmt: skip
CLI = (
    "import argparse, sys; from orchestrator.cli.weights import add_weights_parsers, weights_command; "
    "p = argparse.ArgumentParser(); add_weights_parsers(p.add_subparsers(dest='command')); "
    "sys.exit(weights_command(p.parse_args(sys.argv[1:])))"
)


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as hub:
        for repo in (SD15, CANNY, BLIP, ANNOTATORS):
            hub.add_repo(repo, hub_repo(repo))
        yield hub


@pytest.fixture
def cache(hub, tmp_path, monkeypatch) -> Path:
    """The HF cache of this test, with huggingface_hub pointed at the fake hub."""
    hub.requests.clear()
    hub.release.clear()
    hub_environment(monkeypatch, hub.url, tmp_path / "hub")
    return tmp_path / "hub"


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_weights.add_weights_parsers(parser.add_subparsers(dest="command"))
    return cli_weights.weights_command(parser.parse_args(argv))


def snapshot(cache: Path, repo_id: str) -> Path:
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    return storage / "snapshots" / (storage / "refs" / "main").read_text()


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts}


def test_download_fetches_only_what_the_cards_read_and_shared_files_once(hub, cache, capsys):
    assert (
        cli("download", "--load", "Text2Image_cpu,CannyText2Image_cuda:0,ImageCaptioning_cpu,Image2Line_cpu")
        == 0
    )
    out, err = capsys.readouterr()
    assert files(snapshot(cache, SD15)) == SD_SELECTED  # fp16 variant only: no fp32, EMA, .bin, .ckpt
    assert files(snapshot(cache, CANNY)) == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert files(snapshot(cache, ANNOTATORS)) == {"mlsd_large_512_fp32.pth"}  # what Image2Line reads
    blip_files = files(snapshot(cache, BLIP))
    assert "model.safetensors" in blip_files and "preprocessor_config.json" in blip_files
    fetched = {r.path for r in hub.requests if r.method == "GET" and not r.path.startswith("/api/")}
    for repo, decoys in DECOYS.items():
        assert not {f"{repo}/{d}" for d in decoys} & fetched, repo
    sd_gets = [r.path for r in hub.gets(SD15)]
    assert len(sd_gets) == len(set(sd_gets)) == len(SD_SELECTED)  # the shared base, once for two cards
    size = sum(len(hub.repos[SD15][f]) for f in SD_SELECTED)
    assert "To download:" in out and "free on" in out and f"{size / 1e6:.0f} MB" in out
    assert f"stable-diffusion-v1-5/{UNET_FP16}" in err and "100%" in err  # a progress bar per file
    for card in ("Text2Image", "CannyText2Image", "ImageCaptioning", "Image2Line"):
        assert any(line.split()[:2] == [card, "ready"] for line in out.splitlines()), card

    hub.requests.clear()  # a second run finds everything and fetches nothing
    assert cli("download", "--load", "Text2Image_cpu") == 0
    assert "already here" in capsys.readouterr().out
    assert not [r for r in hub.requests if not r.path.startswith("/api/")]


def test_downloaded_fp16_weights_run_offline_on_cpu(hub, cache, tmp_path, monkeypatch):
    from huggingface_hub import constants

    assert cli("download", "--load", "ImageCaptioning_cpu,Text2Image_cpu") == 0
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    orch = Orchestrator(
        "ImageCaptioning_cpu,Text2Image_cpu", weights="hub", session_root=tmp_path / "sessions"
    )
    session = orch.new_session()
    drawn = session.call_tool("text2image", {"prompt": "a lighthouse", "width": 64, "height": 64})
    assert drawn.error is None and len(drawn.images) == 1
    caption = session.call_tool("image_captioning", {"image": drawn.images[0]})
    assert caption.error is None
    assert orch.resolver._resolved[SD15] == snapshot(cache, SD15)  # the fp16-only snapshot, upcast on CPU


def test_model_dir_gets_org_name_folders_and_the_app_finds_them(hub, cache, tmp_path, capsys):
    models = tmp_path / "models"
    assert cli("download", "--load", "Text2Image_cpu", "--model-dir", str(models)) == 0
    assert files(models / SD15) == SD_SELECTED
    assert not cache.exists() or not list(cache.glob("models--*"))  # nothing went to the HF cache
    capsys.readouterr()
    assert cli("weights", "--load", "Text2Image_cpu", "--model-dir", str(models)) == 0
    out = capsys.readouterr().out
    assert "Text2Image" in out and "model-dir" in out and str(models / SD15) in out
    assert WeightResolver("hub", model_dir=models).resolve(SD15) == models / SD15


def test_weights_reports_ready_and_missing_per_card(hub, cache, capsys):
    assert cli("download", "--load", "Image2Line_cpu") == 0
    capsys.readouterr()
    assert cli("weights", "--load", "Image2Line_cpu,Segmenting_cpu,Image2Canny_cpu") == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:4]}
    assert rows == {"Image2Line": "ready", "Segmenting": "missing", "Image2Canny": "ready"}
    assert "python -m orchestrator download --load Segmenting" in out
    assert cli("weights", "--load", "Image2Line,Segmenting", "--json") == 1
    report = {c["card"]: c for c in json.loads(capsys.readouterr().out)}
    assert report["Image2Line"]["ready"] and report["Image2Line"]["checkpoints"][0]["where"] == "HF cache"
    assert not report["Segmenting"]["ready"] and report["Segmenting"]["size_bytes"] == 0
    # The models panel's view: Image2Hed reads another Annotators file, which was not fetched.
    panel = {s.card: s.ready for s in readiness(load_cards(), ["Image2Line", "Image2Hed", "Image2Canny"])}
    assert panel == {"Image2Line": True, "Image2Hed": False, "Image2Canny": True}


def test_a_killed_download_resumes_where_it_stopped(hub, cache, capsys):
    data = hub.repos[SD15][UNET_FP16]
    half = len(data) // 2
    partial = (
        cache
        / f"models--{SD15.replace('/', '--')}"
        / "blobs"
        / f"{hashlib.sha256(data).hexdigest()}.incomplete"
    )
    hub.stall_after[f"{SD15}/{UNET_FP16}"] = half  # the server sends half the UNet, then hangs
    env = {**os.environ, "HF_HUB_DOWNLOAD_TIMEOUT": "120"}
    proc = subprocess.Popen([sys.executable, "-c", CLI, "download", "--load", "Text2Image_cpu"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (partial.is_file() and partial.stat().st_size >= half - 65536):
            assert proc.poll() is None and time.monotonic() < deadline, "the download never reached the stall"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    hub.release.set()
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    hub.requests.clear()

    assert cli("download", "--load", "Text2Image_cpu") == 0
    assert "resuming 1 partial file" in capsys.readouterr().out
    assert [r.range for r in hub.gets(SD15) if r.path.endswith(UNET_FP16)] == [f"bytes={kept}-"]
    assert (snapshot(cache, SD15) / UNET_FP16).read_bytes() == data and not partial.exists()


def test_a_dropped_connection_resumes_in_the_same_run(hub, cache):
    data = hub.repos[SD15][UNET_FP16]
    hub.drop_after[f"{SD15}/{UNET_FP16}"] = len(data) // 3
    assert cli("download", "--load", "Text2Image_cpu") == 0
    ranges = [r.range for r in hub.gets(SD15) if r.path.endswith(UNET_FP16)]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1].startswith("bytes=")
    assert (snapshot(cache, SD15) / UNET_FP16).read_bytes() == data


def test_first_use_in_the_app_fetches_the_same_files(hub, cache):
    path = WeightResolver("hub").resolve(CANNY)  # what a ControlNet card does on its first call, online
    assert path == snapshot(cache, CANNY)
    assert files(path) == {"config.json", "diffusion_pytorch_model.safetensors"}


def test_dry_run_and_not_enough_disk_space_fetch_nothing(hub, cache, monkeypatch, capsys):
    assert cli("download", "--load", "Text2Image_cpu", "--dry-run") == 1  # nothing fetched: still missing
    assert "To download:" in capsys.readouterr().out
    monkeypatch.setattr(cli_weights.shutil, "disk_usage", lambda path: _Usage(free=1000))
    assert cli("download", "--load", "Text2Image_cpu") == 1
    err = capsys.readouterr().err
    assert "1 KB free" in err and "--model-dir" in err
    assert not [r for r in hub.requests if not r.path.startswith("/api/")]


def test_bad_spec_and_unreachable_hub(cache, monkeypatch, capsys):
    assert cli("download", "--load", "Text2Imag_cpu") == 2
    assert "Did you mean Text2Image?" in capsys.readouterr().err
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert cli("download", "--load", "Text2Image_cpu") == 1
    out = capsys.readouterr().out
    assert f"{SD15}: cannot list its files on the hub" in out
    assert ["Text2Image", "missing"] in [line.split()[:2] for line in out.splitlines()]


class _Usage:
    def __init__(self, free: int):
        self.total, self.used, self.free = free, 0, free
