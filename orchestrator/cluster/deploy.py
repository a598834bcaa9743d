"""``deploy.yaml``: which cards each Ray Serve deployment serves, and its replicas, GPU share and autoscaling.

Pure: a file and the --load items in, a list of :class:`Deployment` out (no Ray). What a deployment serves is
the --load items of its families or cards; its replicas place them on the devices they name, where ``cuda:N``
is the replica's own GPU (Ray shows a replica only the GPUs it gave it) and ``--max-vram`` holds on each replica.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..cards import CardSet
from ..errors import SpecError
from ..placement import working_set
from ..spec import LoadItem

KEYS = {"families", "cards", "num_replicas", "autoscaling", "num_gpus", "num_cpus", "max_ongoing_requests"}
AUTOSCALING_KEYS = {"min_replicas", "max_replicas", "target_ongoing_requests", "initial_replicas"}


@dataclass(frozen=True)
class Deployment:
    """One Ray Serve deployment: the --load items its replicas serve and how many of them run where."""

    name: str
    items: tuple[LoadItem, ...]
    num_replicas: int = 1
    autoscaling: Mapping[str, Any] | None = None
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    max_ongoing_requests: int = 4
    budgets: Mapping[str, int] = field(default_factory=dict)  # --max-vram, as the replica names its devices

    @property
    def cards(self) -> frozenset[str]:
        return frozenset(item.name for item in self.items)

    def load_spec(self) -> str:
        """The --load spec of one replica: cuda:N becomes its own GPU, cuda:0."""
        return ",".join(f"{item.name}_{replica_device(item.device)}" for item in self.items)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``serve.deployment`` / ``Deployment.options``."""
        options: dict[str, Any] = {
            "name": self.name,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }
        if self.autoscaling:
            options["autoscaling_config"] = dict(self.autoscaling)
        else:
            options["num_replicas"] = self.num_replicas
        return options


def default_deploy_path() -> Path:
    return Path(str(resources.files("orchestrator") / "data" / "deploy.yaml"))


def load_deployments(
    cards: CardSet, items: Sequence[LoadItem], path: str | Path | None = None,
    budgets: Mapping[str, int] | None = None,
) -> list[Deployment]:  # fmt: skip
    """The deployments of ``path`` (default: the shipped deploy.yaml) that serve at least one of ``items``."""
    path = Path(path) if path else default_deploy_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(
            f"There is no deployment file {path}; give --deploy the path of a deploy.yaml."
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}.") from exc
    return parse_deployments(raw, cards, items, budgets or {}, str(path))


def parse_deployments(
    raw: Any,
    cards: CardSet,
    items: Sequence[LoadItem],
    budgets: Mapping[str, int],
    source: str = "deploy.yaml",
) -> list[Deployment]:
    if not isinstance(raw, dict) or not isinstance(raw.get("deployments"), dict):
        raise SpecError(f"{source} needs a 'deployments:' mapping of name -> settings.")
    gpu_mb = int(raw.get("gpu_mb", 24576))
    taken: dict[str, str] = {}
    out = []
    for name, entry in raw["deployments"].items():
        deployment = _deployment(str(name), entry or {}, cards, items, budgets, gpu_mb, taken, source)
        if deployment is not None:
            out.append(deployment)
    return out


def _deployment(
    name: str, entry: Any, cards: CardSet, items: Sequence[LoadItem], budgets: Mapping[str, int], gpu_mb: int,
    taken: dict[str, str], source: str,
) -> Deployment | None:  # fmt: skip
    where = f"{source}: deployment '{name}'"
    if not isinstance(entry, dict) or set(entry) - KEYS:
        unknown = sorted(set(entry) - KEYS) if isinstance(entry, dict) else []
        raise SpecError(f"{where} has unknown settings {unknown}; it takes {', '.join(sorted(KEYS))}.")
    unknown_cards = [c for c in entry.get("cards", []) if c not in cards]
    if unknown_cards:
        raise SpecError(f"{where} names the card '{unknown_cards[0]}', which model_cards.yaml does not have.")
    families, named = set(entry.get("families", [])), set(entry.get("cards", []))
    mine = [i for i in items if i.name not in taken and (i.name in named or cards[i.name].family in families)]
    for item in mine:
        taken[item.name] = name
    if not mine:
        return None
    autoscaling = entry.get("autoscaling")
    if autoscaling is not None and (not isinstance(autoscaling, dict) or set(autoscaling) - AUTOSCALING_KEYS):
        raise SpecError(f"{where}: autoscaling takes {', '.join(sorted(AUTOSCALING_KEYS))}.")
    on_gpu = [i for i in mine if i.device.startswith("cuda")]
    num_gpus = entry.get("num_gpus")
    if num_gpus is None:
        mb = max(
            (working_set(cards, n) for n in cards.with_dependencies([i.name for i in on_gpu])), default=0
        )
        num_gpus = min(1.0, math.ceil(20 * mb / gpu_mb) / 20) if on_gpu else 0.0
    if on_gpu and float(num_gpus) <= 0:
        raise SpecError(f"{where} has num_gpus 0 but --load puts {on_gpu[0].name} on {on_gpu[0].device}; "
                        "give the deployment a GPU share or load the card on cpu.")  # fmt: skip
    devices = {i.device for i in mine}
    own = {replica_device(d): mb for d, mb in budgets.items() if d in devices or replica_device(d) in devices}
    return Deployment(name, tuple(mine), int(entry.get("num_replicas", 1)), autoscaling, float(num_gpus),
                      float(entry.get("num_cpus", 1.0)), int(entry.get("max_ongoing_requests", 4)), own)  # fmt: skip


def replica_device(device: str) -> str:
    """A device as a replica names it: any cuda:N is the replica's own first GPU."""
    return "cuda:0" if device.startswith("cuda") else device
