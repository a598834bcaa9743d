"""The eight detector tools and the eight ControlNet tools, end to end through a session, with tiny weights."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from orchestrator.cards import default_cards_path, parse_cards
from orchestrator.engine import Orchestrator
from orchestrator.events import ToolCall
from orchestrator.session import Session
from orchestrator.tools import Progress

CONTROLNET_OF = {
    "image2canny": "canny2image",
    "image2line": "line2image",
    "image2hed": "hed2image",
    "image2scribble": "scribble2image",
    "image2pose": "pose2image",
    "image2seg": "seg2image",
    "image2depth": "depth2image",
    "image2normal": "normal2image",
}
DETECTOR_CARDS = ["Image2Canny", "Image2Line", "Image2Hed", "Image2Scribble", "Image2Pose", "Image2Seg",
                  "Image2Depth", "Image2Normal"]  # fmt: skip
CONTROLNET_CARDS = [name.replace("Image2", "") + "Text2Image" for name in DETECTOR_CARDS]
SIZE = (128, 64)  # a 2:1 photo after upload (tiny weights cap the long side at the drawing resolution)


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Orchestrator:
    raw = yaml.safe_load(default_cards_path().read_text(encoding="utf-8"))
    raw["tiny_overrides"]["resolution"] = 128  # at 64 px every picture would be drawn square
    spec = ",".join(f"{name}_cpu" for name in ["Text2Image", *DETECTOR_CARDS, *CONTROLNET_CARDS])
    return Orchestrator(
        spec, weights="tiny", cards=parse_cards(raw), session_root=tmp_path_factory.mktemp("s")
    )


@pytest.fixture(scope="module")
def session(orchestrator: Orchestrator) -> Session:
    return orchestrator.new_session()


@pytest.fixture(scope="module")
def photo(session: Session) -> str:
    astronaut = pytest.importorskip("skimage.data").astronaut()[:256]  # 512×256, uploaded as 128×64
    return session.upload(Image.fromarray(astronaut), filename="astronaut.png")


@pytest.fixture(scope="module")
def maps(session: Session, photo: str) -> dict[str, str]:
    """Each detector run once on the photo: tool -> the map it made."""
    out = {}
    for tool in CONTROLNET_OF:
        call = session.call_tool(tool, {"image": photo})
        assert call.error is None, call.error
        assert len(call.images) == 1 and call.images[0] in call.output
        out[tool] = call.images[0]
    return out


def _pixels(session: Session, name: str) -> np.ndarray:
    with Image.open(session.images.path(name)) as image:
        assert image.mode == "RGB"
        return np.asarray(image).astype(int)


def _grey(pixels: np.ndarray) -> bool:
    return bool((pixels == pixels[:, :, :1]).all())


@pytest.mark.parametrize("tool", list(CONTROLNET_OF))
def test_detector_makes_a_map_the_size_of_the_photo(
    session: Session, photo: str, maps: dict, tool: str
) -> None:
    from foundation_models.segmentation import ADE20K_PALETTE

    assert session.images.lineage(photo).size == SIZE
    pixels = _pixels(session, maps[tool])
    assert pixels.shape == (SIZE[1], SIZE[0], 3)
    record = session.images.lineage(maps[tool])
    assert (record.tool, record.parents, record.seed) == (tool, (photo,), None)
    if tool in ("image2canny", "image2line", "image2scribble"):  # white strokes on black
        assert _grey(pixels) and set(np.unique(pixels)) <= {0, 255}
    elif tool in ("image2hed", "image2depth"):
        assert _grey(pixels)
    elif tool == "image2seg":
        palette = {tuple(c) for c in ADE20K_PALETTE.tolist()}
        assert {tuple(c) for c in pixels.reshape(-1, 3).tolist()} <= palette
    elif tool == "image2normal":
        assert (pixels[:, :, 2] >= 127).all()  # every normal faces the viewer


def test_canny_map_follows_the_photo(session: Session, photo: str, maps: dict) -> None:
    edges = _pixels(session, maps["image2canny"])[:, :, 0] > 0
    assert 0.01 < edges.mean() < 0.5  # a real photo has edges, and not everywhere


@pytest.fixture(scope="module")
def drawings(session: Session, maps: dict[str, str]) -> dict[str, tuple[ToolCall, list[Progress]]]:
    """Each ControlNet tool run once on its detector's map: detector -> (the call, its progress reports)."""
    out = {}
    for detector, tool in CONTROLNET_OF.items():
        steps: list[Progress] = []
        args = {"image": maps[detector], "prompt": "an astronaut", "seed": 7}
        out[detector] = session.call_tool(tool, args, report=steps.append), steps
    return out


@pytest.mark.parametrize("detector", list(CONTROLNET_OF))
def test_controlnet_draws_from_its_detectors_map(
    session: Session, maps: dict, drawings: dict, detector: str
) -> None:
    call, steps = drawings[detector]
    assert call.error is None, call.error
    assert len(call.images) == 1 and call.images[0] in call.output
    assert _pixels(session, call.images[0]).shape == (SIZE[1], SIZE[0], 3)  # the photo's 2:1 kept
    record = session.images.lineage(call.images[0])
    assert (record.tool, record.parents, record.seed) == (CONTROLNET_OF[detector], (maps[detector],), 7)
    assert [(p.step, p.total) for p in steps if p.step is not None] == [(1, 2), (2, 2)]


def test_same_seed_same_picture(session: Session, drawings: dict) -> None:
    first = drawings["image2depth"][0]
    again = session.call_tool("depth2image", first.args)
    assert again.images[0] != first.images[0]
    assert (_pixels(session, first.images[0]) == _pixels(session, again.images[0])).all()


def test_a_photo_given_instead_of_its_map_says_which_detector_to_run(session: Session, photo: str) -> None:
    before = len(session.images.names())
    call = session.call_tool("canny2image", {"image": photo, "prompt": "a robot"})
    assert call.error and "image2canny" in call.error and photo in call.error
    assert len(session.images.names()) == before


def test_a_users_sketch_goes_straight_to_scribble2image(session: Session) -> None:
    sketch = np.full((64, 128, 3), 255, dtype=np.uint8)  # dark strokes on white, as people draw
    sketch[20:24, 10:118] = 0
    sketch[10:54, 60:64] = 0
    call = session.call_tool(
        "scribble2image", {"image": session.upload(Image.fromarray(sketch)), "prompt": "a kite"}
    )
    assert call.error is None, call.error


def test_every_controlnet_runs_on_one_shared_sd_base(
    orchestrator: Orchestrator, session: Session, drawings: dict
) -> None:
    drawn = session.call_tool(
        "text2image", {"prompt": "a cat", "seed": 1}
    )  # after all eight ControlNets drew
    assert drawn.error is None, drawn.error
    pipes = []
    for card in ["Text2Image", *CONTROLNET_CARDS]:
        with orchestrator.manager.use(card) as model:
            pipes.append(model.pipe)
    for part in ("unet", "vae", "text_encoder", "tokenizer"):
        assert all(getattr(pipe, part) is getattr(pipes[0], part) for pipe in pipes), part
    for part in ("unet", "vae", "text_encoder"):  # one copy of the weights in memory
        assert len({next(getattr(pipe, part).parameters()).data_ptr() for pipe in pipes}) == 1, part
    controlnets = {id(pipe.controlnet) for pipe in pipes[1:]}
    assert len(controlnets) == 8  # each card loads only its own ControlNet


def test_hed_and_scribble_share_one_hed_net_and_depth_and_normal_one_dpt(orchestrator: Orchestrator) -> None:
    models = {}
    for card in ("Image2Hed", "Image2Scribble", "Image2Depth", "Image2Normal"):
        with orchestrator.manager.use(card) as model:
            models[card] = model
    assert models["Image2Hed"].hed is models["Image2Scribble"].hed
    assert models["Image2Depth"].dpt is models["Image2Normal"].dpt
