"""Every model family through the same contract: its declaration, a tiny load, a call, an offload, the way back.

The families are found from ``foundation_models/`` and the registry, not listed here: a new family file with a
card is walked through this test without touching it. On this CPU-only machine an offload drops the model (the
manager's rule for the CPU) and the way back is a reload from the same checkpoint; moving weights between
devices (``to``) is exercised by the GPU benchmarks.
"""

from __future__ import annotations

import hashlib
import pkgutil
import re
from pathlib import Path

import pytest

import foundation_models
from foundation_models.family import Family, family_module
from orchestrator.cards import load_cards
from orchestrator.download import card_needs
from orchestrator.engine import Orchestrator
from orchestrator.warmup import edge_map, sample_args, synthetic_picture

# helpers beside the family files
NOT_FAMILIES = {"family", "int8_weights", "fp8", "fastpath", "tiny", "webclient"}


def family_files() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(foundation_models.__path__)
        if m.name not in NOT_FAMILIES and not m.name.startswith(("fast_", "compile_"))
    )


def card_for(family: str) -> str:
    """The family's card that exercises most of it: one with shared components where there is one."""
    cards = load_cards()
    of_family = [c for c in cards.cards.values() if c.family == family]
    return next((c.name for c in of_family if c.shares), of_family[0].name)


def test_every_family_file_declares_itself_and_every_card_names_a_family():
    for name in family_files():
        family = family_module(name)
        assert isinstance(family, Family) and family.name == name, name
    cards = load_cards()
    used = {c.family for c in cards.cards.values()} | {g.family for g in cards.groups.values()}
    assert used <= set(family_files())
    for group in cards.groups.values():
        assert family_module(group.family).load_component is not None, group.name
    with pytest.raises(LookupError, match="no model family 'nonesuch'"):
        family_module("nonesuch")


def test_the_downloader_reads_the_files_a_family_declares():
    cards = load_cards()
    needs = {n.repo_id: n for n in card_needs(cards, "Image2Hed")}
    hed_file = family_module("detectors").files.named("hed")
    assert hed_file and needs["lllyasviel/Annotators"].files == (hed_file,)
    text2image = card_needs(cards, "Text2Image")[0]
    assert text2image.kind == family_module("stable_diffusion").files.layout == "pipeline"


def _load_offload_back(orch: Orchestrator, card: str) -> None:
    with orch.manager.use(card) as client:
        assert callable(getattr(client, "to", None)), "a model has to(device), even one without weights"
    orch.manager.free_memory(["cpu"])
    assert [s.state for s in orch.manager.status()] == ["not loaded"]
    with orch.manager.use(card):
        pass
    assert [s.loads for s in orch.manager.status()] == [2]


def _digest(session, names: list[str]) -> list[str]:
    return [hashlib.sha256(session.images.path(n).read_bytes()).hexdigest() for n in names]


@pytest.mark.parametrize("family", sorted({c.family for c in load_cards().cards.values()}))
def test_tiny_load_call_offload_back_same_output(family, tmp_path: Path):
    card = card_for(family)
    orch = Orchestrator(f"{card}_cpu", weights="tiny", brain="rules", session_root=tmp_path)
    if family_module(
        family
    ).warmup.network:  # a client (the web): loaded, dropped, loaded again; never called
        _load_offload_back(orch, card)
        return
    session = orch.new_session()
    photo = session.upload(synthetic_picture(128), "photo.png")
    edges = session.upload(edge_map(synthetic_picture(128)), "edges.png")
    tool = next(t for t in orch.tools.values() if t.card == card)
    condition_map = orch.manager.family_of(card).warmup.condition_map
    args = sample_args(tool, photo, (128, 128), edges, condition_map)
    args = {**args, "seed": 7} if any(p.name == "seed" for p in tool.params) else args

    first = session.call_tool(tool.name, args)
    assert first.error is None, first.error
    loaded = {s.card: s.loads for s in orch.manager.status() if s.loads}  # a composite card: its dependencies
    assert loaded, "the call loaded its models"
    orch.manager.free_memory(["cpu"])  # the offload; on the CPU the models are dropped
    assert not any(s.state == "resident" for s in orch.manager.status())
    again = session.call_tool(tool.name, args)
    assert again.error is None, again.error
    assert {s.card: s.loads for s in orch.manager.status() if s.card in loaded} == {
        name: n + 1 for name, n in loaded.items()
    }, "each loaded again, once"

    assert _digest(session, again.images) == _digest(session, first.images), "same seed, same picture"
    text = re.sub(r"image/[0-9a-f]{8}\.png", "<image>", first.output)
    assert re.sub(r"image/[0-9a-f]{8}\.png", "<image>", again.output) == text
