"""Issue 3's acceptance run: every card loaded, every tool called by a slash command, one CLI process.

python -m orchestrator run --weights tiny --brain rules --load "<all 27>_cpu" --image photo.png --json "/tool ..." ...
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from PIL import Image

from foundation_models.family import family_module
from orchestrator.cards import load_cards
from orchestrator.toolbox import all_tools

ROOT = Path(__file__).resolve().parents[1]

# One turn per tool; each detector is followed by its ControlNet, which draws from the detector's map.
TURNS = [
    "/image_captioning",
    "/visual_question_answering question='what is in the picture?'",
    "/text2box object=person",
    "/segment_anything",
    "/segment_object object=person",
    "/inpainting mask=latest prompt='a cat'",
    "/remove_object object=person",
    "/replace_object object=person replacement='a robot'",
    "/remove_background",
    "/instruct_pix2pix instruction='make it snowy'",
    "/outpainting width=128 height=128",
    "/text2image prompt='a red car'",
    "/text2image_draft prompt='a red car'",
    "/add_text text='Hello 你好'",
    "/text_art text='Lab' prompt='gold letters'",
    "/knowledge_search question='what do my notes say?'",
    *[
        turn
        for detector, controlnet in [("canny", "canny"), ("line", "line"), ("hed", "hed"), ("scribble", "scribble"),
                                     ("pose", "pose"), ("seg", "seg"), ("depth", "depth"), ("normal", "normal")]
        for turn in (f"/image2{detector}", f"/{controlnet}2image prompt='a house'")
    ],
]  # fmt: skip


def offline_cards():
    """Every card but those whose tools reach the network (the web cards: tests/test_web_*.py)."""
    cards = load_cards()
    names = [c.name for c in cards.cards.values() if not family_module(c.family).warmup.network]
    return replace(cards, cards={name: cards[name] for name in names})


def test_every_tool_runs_from_the_cli_with_all_27_cards(tmp_path):
    cards = offline_cards()
    assert {t.split()[0][1:] for t in TURNS} == {t.name for t in all_tools(cards)}, "a tool has no turn here"
    photo = tmp_path / "photo.png"
    from skimage import data

    Image.fromarray(data.astronaut()).resize((128, 96)).save(photo)
    load = ",".join(f"{name}_cpu" for name in cards.names())
    command = [sys.executable, "-m", "orchestrator", "run", "--weights", "tiny", "--brain", "rules", "--load", load,
               "--image", str(photo), "--session-dir", str(tmp_path / "session"), "--json", *TURNS]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    turns = json.loads(result.stdout)["turns"]
    calls = [call for turn in turns for call in turn["tool_calls"]]
    assert [c["tool"] for c in calls] == [t.split()[0][1:] for t in TURNS]
    failed = {c["tool"]: c["error"] for c in calls if c["error"]}
    assert not failed, failed
    answers = [
        c for c in calls if c["tool"] in ("image_captioning", "visual_question_answering", "knowledge_search")
    ]
    made = [c for c in calls if c not in answers and c["tool"] != "segment_anything"]
    assert all(c["images"] and all(Path(p).is_file() for p in c["images"]) for c in made)
    lineage = json.loads((tmp_path / "session" / "lineage.json").read_text())
    assert {r["tool"] for r in lineage} >= {c["tool"] for c in made}
