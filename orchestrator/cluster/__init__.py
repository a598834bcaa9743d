"""The tools on a Ray cluster (``--ray``): the model families as Ray Serve deployments, the sessions here.

``serve_on_ray(load, settings=...)`` is the Orchestrator of ``Orchestrator(load, ...)`` whose cards that
``deploy.yaml`` assigns to a deployment run on that deployment's replicas (docs/scale-out.md). Ray is imported
only here, when it is called: the package works without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cards import load_cards
from ..errors import SpecError
from ..settings import Settings
from ..spec import parse_budgets, parse_load_spec
from .deploy import Deployment, load_deployments

if TYPE_CHECKING:
    from ..engine import Orchestrator

__all__ = ["Deployment", "load_deployments", "serve_on_ray"]


def serve_on_ray(
    load: str, *, settings: Settings | None = None, deploy: str | Path | None = None, address: str | None = None,
    max_vram: str | list[str] | None = None, runtime_env: Mapping[str, Any] | None = None, replica: Any = None,
    **options: Any,
) -> Orchestrator:  # fmt: skip
    """Start the deployments (their replicas load nothing until their first call) and the ingress Orchestrator.

    ``options`` are the Orchestrator's other keyword arguments (``brain``, ``session_root``, ...); ``replica``
    replaces the replicas' class (tests); ``runtime_env`` is given to ``ray.init`` when this process starts Ray."""
    from ..engine import Orchestrator

    settings = settings or Settings.from_env()
    cards = load_cards()
    if settings.int8_weights:
        cards = cards.with_int8_diffusion()
    items = parse_load_spec(load, cards)
    # the file's mistakes before Ray starts
    deployments = load_deployments(cards, items, deploy, parse_budgets(max_vram))
    try:
        from . import ray_tools
    except ImportError as exc:
        raise SpecError('--ray needs Ray Serve: pip install "visual-orchestrator[ray]".') from exc
    remote = ray_tools.start(deployments, settings, address, runtime_env, replica or ray_tools.ToolReplica)
    return Orchestrator(items, settings=settings, max_vram=max_vram, remote=remote, **options)
