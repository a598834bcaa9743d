"""deploy.yaml (``--ray``): which deployment serves which card, with what share of a GPU; no Ray needed."""

from __future__ import annotations

import pytest

from orchestrator.cards import load_cards
from orchestrator.cli import main
from orchestrator.cluster.deploy import load_deployments, parse_deployments
from orchestrator.errors import SpecError
from orchestrator.spec import parse_load_spec

CARDS = load_cards()


def deployments(load: str, raw=None, budgets=None):
    items = parse_load_spec(load, CARDS)
    if raw is None:
        return {d.name: d for d in load_deployments(CARDS, items, budgets=budgets)}
    return {d.name: d for d in parse_deployments(raw, CARDS, items, budgets or {})}


def test_the_shipped_file_puts_each_family_on_its_deployment():
    load = ("Text2Image_cuda:0,CannyText2Image_cuda:0,InstructPix2Pix_cuda:0,ImageCaptioning_cuda:0,"
            "Text2Box_cuda:0,Segmenting_cuda:0,ObjectSegmenting_cuda:0,Image2Canny_cpu,Image2Depth_cpu,WebSearch_cpu")  # fmt: skip
    found = deployments(load, budgets={"cuda:0": 8192})
    assert found["diffusion"].cards == {"Text2Image", "CannyText2Image", "InstructPix2Pix"}
    assert found["blip"].cards == {"ImageCaptioning"}
    assert found["grounding"].cards == {"Text2Box", "Segmenting", "ObjectSegmenting"}
    assert found["detectors"].cards == {"Image2Canny", "Image2Depth"} and found["detectors"].num_gpus == 0
    assert 0 < found["blip"].num_gpus < found["diffusion"].num_gpus <= 1  # from the cards' working sets
    assert found["diffusion"].budgets == {"cuda:0": 8192} and found["detectors"].budgets == {}
    assert "WebSearch" not in {c for d in found.values() for c in d.cards}  # stays in the ingress


def test_a_replica_sees_its_own_gpu_and_the_options_reach_serve():
    raw = {"deployments": {"sd": {"families": ["stable_diffusion"], "num_gpus": 0.5, "num_cpus": 0.5,
                                  "autoscaling": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}}}}  # fmt: skip
    (sd,) = deployments("Text2Image_cuda:3", raw).values()
    assert sd.load_spec() == "Text2Image_cuda:0"
    options = sd.options()
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.5}
    assert options["autoscaling_config"]["max_replicas"] == 4 and "num_replicas" not in options


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"deployments": {"sd": {"families": ["stable_diffusion"], "num_gpus": 0}}}, "num_gpus 0"),
        ({"deployments": {"sd": {"cards": ["Nope"]}}}, "does not have"),
        ({"deployments": {"sd": {"replicas": 2}}}, "unknown settings"),
        ([], "needs a 'deployments:'"),
    ],
)
def test_mistakes_are_one_sentence(raw, message):
    with pytest.raises(SpecError, match=message):
        deployments("Text2Image_cuda:0", raw)


def test_ray_flags_without_ray_exit_2(capsys):
    assert main(["serve", "--address", "auto", "--weights", "tiny", "--load", "Image2Canny_cpu"]) == 2
    assert "--address and --deploy go with --ray" in capsys.readouterr().err
    assert main(["serve", "--ray", "--deploy", "/nonexistent/deploy.yaml", "--load", "Image2Canny_cpu"]) == 2
    assert "There is no deployment file" in capsys.readouterr().err
