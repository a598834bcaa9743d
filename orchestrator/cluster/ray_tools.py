"""The deployments on Ray Serve, and the ingress's side of a call: a streaming handle, retried once.

Imported only with ``--ray`` (Ray is the optional ``ray`` extra). Each deployment of ``deploy.yaml`` becomes
one Serve application of :class:`~orchestrator.cluster.replica.ToolReplica` replicas, reached through its
``DeploymentHandle`` (no HTTP proxy: the ingress is this process). A call streams the replica's progress back
as it comes; a replica that dies mid-call (Ray's controller starts another) costs one retry, on whichever
replica is up, and a second loss is one sentence to the brain.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

from ..errors import ToolError
from ..remote import RemoteResult
from ..settings import Settings
from ..tools import Progress
from .deploy import Deployment
from .replica import ToolReplica

log = logging.getLogger(__name__)

APP = "visual-orchestrator"
LOST = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError)


class RayTools:
    """The ``RemoteTools`` of an Orchestrator whose cards run on Serve deployments."""

    def __init__(self, deployments: Sequence[Deployment], handles: Mapping[str, Any]):
        self.deployments = list(deployments)
        self._handles = dict(handles)
        self._by_card = {card: d.name for d in deployments for card in d.cards}
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # replica id -> calls it answered (its id is in each result)
        self.retries = 0

    def serves(self, card: str) -> bool:
        return card in self._by_card

    def deployment_of(self, card: str) -> str:
        return self._by_card[card]

    def run(
        self, card: str, tool: str, args: Mapping[str, Any], inputs: Mapping[str, bytes],
        report: Callable[[Progress], None],
    ) -> RemoteResult:  # fmt: skip
        name = self._by_card[card]
        for attempt in (1, 2):
            try:
                return self._once(name, tool, args, inputs, report)
            except LOST as exc:
                log.warning("the %s replica running %s stopped (%s); attempt %d of 2", name, tool,
                            type(exc).__name__, attempt)  # fmt: skip
                if attempt == 2:
                    raise ToolError(f"{tool} stopped twice because the {name} replica running it went down; "
                                    "the images made so far are kept, so try again in a moment.") from exc  # fmt: skip
                with self._lock:
                    self.retries += 1
                report(Progress(tool, f"the {name} replica went down; trying again on another"))
        raise AssertionError("unreachable")

    def _once(
        self, name: str, tool: str, args: Mapping[str, Any], inputs: Mapping[str, bytes],
        report: Callable[[Progress], None],
    ) -> RemoteResult:  # fmt: skip
        response = self._handles[name].options(stream=True).call.remote(tool, dict(args), dict(inputs))
        result = None
        for item in response:
            if "progress" in item:
                report(Progress(tool, *item["progress"]))
            else:
                result = item["result"]
        if result is None:
            raise ToolError(f"The {name} replica ended {tool} without a result; try again.")
        with self._lock:
            self.calls[result.where] += 1
        return result

    def info(self, name: str) -> dict[str, Any]:
        """One replica's ``ToolReplica.info`` (whichever Serve picks)."""
        return self._handles[name].info.remote().result()

    def close(self) -> None:
        for deployment in self.deployments:
            serve.delete(f"{APP}-{deployment.name}")


def start(
    deployments: Sequence[Deployment], settings: Settings, address: str | None = None,
    runtime_env: Mapping[str, Any] | None = None, replica: type = ToolReplica,
) -> RayTools:  # fmt: skip
    """Connect to the cluster at ``address`` (None: the one ``RAY_ADDRESS`` names, else a local one), start one
    Serve application per deployment and wait until their replicas are up. ``replica``: its class (tests)."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, runtime_env=dict(runtime_env or {}) or None)
    serve.start(proxy_location="Disabled")
    handles = {}
    for deployment in deployments:
        app = serve.deployment(replica).options(**deployment.options())
        bound = app.bind(deployment.load_spec(), settings, dict(deployment.budgets))
        handles[deployment.name] = serve.run(bound, name=f"{APP}-{deployment.name}", route_prefix=None)
        log.info("deployment %s: %s", deployment.name, deployment.load_spec())
    return RayTools(deployments, handles)
