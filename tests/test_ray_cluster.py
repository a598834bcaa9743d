"""The tools on a local Ray cluster (``--ray``): two diffusion replicas and one BLIP replica, tiny weights.

One cluster for the module (CPU only, half a core a replica). Eight sessions at once spread over the diffusion
replicas; a replica that dies in the middle of a call costs one retry and nothing else; the same chat gives
the same pixels as one process does.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from orchestrator.cluster import serve_on_ray  # noqa: E402
from orchestrator.engine import Orchestrator  # noqa: E402
from orchestrator.events import ToolProgress, TurnFinished  # noqa: E402
from orchestrator.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOAD = "Text2Image_cpu,ImageCaptioning_cpu"
DEPLOY = """
deployments:
  diffusion: {families: [stable_diffusion], num_replicas: 2, num_cpus: 0.5, max_ongoing_requests: 2}
  blip: {families: [blip], num_replicas: 1, num_cpus: 0.5, max_ongoing_requests: 4}
"""
NAME = re.compile(r"image/[0-9a-f]{8}\.png")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray")
    (folder / "deploy.yaml").write_text(DEPLOY)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}})  # fmt: skip
    from ray_replicas import CrashingReplica

    orch = serve_on_ray(LOAD, settings=Settings.from_env(weights="tiny", session_root=folder / "sessions"),
                        deploy=folder / "deploy.yaml", brain="rules", replica=CrashingReplica)  # fmt: skip
    try:
        yield orch
    finally:
        serve.shutdown()
        ray.shutdown()


def draw_and_caption(session, seed: int):
    """One chat: a picture, then its caption; the events of both turns."""
    first = list(session.stream(f'/text2image prompt="a red boat {seed}" seed={seed}'))
    second = list(session.stream("/image_captioning"))
    return first, second


def finished(events) -> TurnFinished:
    return next(e for e in events if isinstance(e, TurnFinished))


def test_the_code_the_replicas_run_is_this_checkout(cluster):
    assert cluster.remote.info("diffusion")["code"].startswith(str(REPO))
    assert not cluster.plan.placements  # nothing placed in the ingress: both cards are served


def test_eight_sessions_spread_over_the_replicas_with_progress_and_lineage(cluster):
    sessions = [cluster.new_session() for _ in range(8)]
    before = dict(cluster.remote.calls)
    barrier = threading.Barrier(len(sessions))

    def chat(i: int):
        barrier.wait()
        return draw_and_caption(sessions[i], 100 + i)

    with ThreadPoolExecutor(len(sessions)) as pool:
        results = list(pool.map(chat, range(len(sessions))))

    for i, (first, second) in enumerate(results):
        drawn, captioned = finished(first).result, finished(second).result
        assert [c.error for c in drawn.tool_calls + captioned.tool_calls] == [None, None], (drawn, captioned)
        steps = [e for e in first if isinstance(e, ToolProgress) and e.total]
        assert (steps[-1].step, steps[-1].total) == (2, 2)  # the replica's diffusion steps, streamed back
        (name,) = drawn.tool_calls[0].images
        lineage = sessions[i].images.lineage(name)
        assert (lineage.tool, lineage.seed) == ("text2image", 100 + i)
        assert (sessions[i].folder / name).is_file() and name in drawn.reply
        assert captioned.tool_calls[0].args["image"] == name  # the caption read this session's own picture
    counts = {k: v - before.get(k, 0) for k, v in cluster.remote.calls.items()}
    per_replica = sorted(v for v in counts.values() if v)
    assert sum(per_replica) == 16 and len(per_replica) == 3, counts  # 2 diffusion replicas + 1 BLIP
    assert 8 in per_replica and min(per_replica) >= 1, counts  # BLIP took 8; the diffusion calls were shared


def test_the_same_chat_gives_the_same_pixels_as_one_process(cluster, tmp_path):
    alone = Orchestrator(LOAD, weights="tiny", brain="rules", session_root=tmp_path)
    images, replies = [], []
    for orch in (alone, cluster):
        session = orch.new_session()
        first, second = draw_and_caption(session, 7)
        (name,) = finished(first).result.tool_calls[0].images
        images.append(np.asarray(session.images.open(name)))
        replies.append(finished(second).result.reply.replace(name, "NAME"))
    assert images[0].shape == images[1].shape and np.array_equal(images[0], images[1])
    assert replies[0] == replies[1]


def test_a_replica_that_dies_mid_call_costs_one_retry_and_nothing_else(cluster):
    victim, others = cluster.new_session(), [cluster.new_session() for _ in range(3)]
    kept = finished(list(victim.stream('/text2image prompt="before" seed=1'))).result.tool_calls[0].images[0]
    marker = Path(tempfile.mkdtemp()) / "crashed"
    retries = cluster.remote.retries

    def crash():
        return list(victim.stream(f'/text2image prompt="crash:{marker} boat" seed=5'))

    def calm(i: int):
        return finished(list(others[i].stream(f'/text2image prompt="calm" seed={i}'))).result

    with ThreadPoolExecutor(4) as pool:
        crashed = pool.submit(crash)
        calm_results = list(pool.map(calm, range(3)))
        events = crashed.result()
    assert marker.is_file()  # a replica did die in the middle of the call
    call = finished(events).result.tool_calls[0]
    assert call.error is None, call.error  # retried once, on a replica that was up
    # the crashed call's retry, and the call of another session that was on the same replica then, if any
    assert retries + 1 <= cluster.remote.retries <= retries + 2
    assert any("went down" in e.message for e in events if isinstance(e, ToolProgress))
    assert all(r.tool_calls[0].error is None for r in calm_results)
    assert kept in victim.images and (victim.folder / kept).is_file()  # nothing made before was lost
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # Ray's controller starts a replica in place of the dead one
        status = serve.status().applications["visual-orchestrator-diffusion"].deployments["diffusion"]
        if status.replica_states.get("RUNNING") == 2 and status.status == "HEALTHY":
            break
        time.sleep(1)
    assert status.replica_states.get("RUNNING") == 2, status


def test_a_second_loss_is_one_sentence_and_keeps_what_was_made():
    from ray.exceptions import ActorDiedError

    from orchestrator.cluster.deploy import Deployment
    from orchestrator.cluster.ray_tools import RayTools
    from orchestrator.errors import ToolError
    from orchestrator.spec import LoadItem

    class Gone:  # a handle whose replica dies in every call
        def options(self, **kwargs):
            return self

        @property
        def call(self):
            return self

        def remote(self, *args):
            raise ActorDiedError()

    tools = RayTools([Deployment("diffusion", (LoadItem("Text2Image", "cpu"),))], {"diffusion": Gone()})
    reports = []
    with pytest.raises(ToolError) as error:
        tools.run("Text2Image", "text2image", {"prompt": "x"}, {}, reports.append)
    assert str(error.value).count(".") == 1 and "try again" in str(error.value)
    assert tools.retries == 1 and len(reports) == 1


def test_without_ray_the_package_imports_and_plans(monkeypatch):
    """Ray is optional: nothing outside orchestrator.cluster.ray_tools imports it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['ray'] = None; import orchestrator.cluster, orchestrator.cli, "
            "orchestrator.engine; print('ok')")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
