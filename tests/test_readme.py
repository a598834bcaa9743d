"""The README's examples work as written (with tiny weights, on a photo in the current folder)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def block(language: str, containing: str) -> str:
    for code in re.findall(rf"```{language}\n(.*?)```", README, re.S):
        if containing in code:
            return code
    raise AssertionError(f"no ```{language} block containing {containing!r} in README.md")


@pytest.fixture
def photo_dir(tmp_path, monkeypatch):
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_first_screen_has_the_install_run_and_test_commands():
    first_screen = README[: README.index("---")]
    assert "pip install -e . && python gradio_app.py --weights tiny" in first_screen
    test_command = 'pip install -e ".[dev]" && python -m pytest -q'
    assert test_command in first_screen
    assert test_command in (ROOT / ".ci" / "run").read_text(), "CI must run the README's test command"


def test_python_api_example_runs(photo_dir, capsys):
    code = block("python", "from orchestrator import Orchestrator")
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "image2canny" in out and "image/" in out


def test_cli_run_example_runs(photo_dir):
    command = block("bash", "orchestrator run").replace("\\\n", " ")
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "orchestrator"]
    result = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    turns = json.loads(result.stdout)["turns"]
    assert [c["tool"] for t in turns for c in t["tool_calls"]] == ["image2canny", "canny2image"]
    assert all(Path(p).is_file() for t in turns for p in t["images"])
