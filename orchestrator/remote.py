"""Tools that run elsewhere (a Ray Serve replica that holds their models): what a call sends and gets back.

A tool whose card a :class:`RemoteTools` serves runs in another process. The call sends the session's input
images as PNG bytes and gets back its observation, the images it made (PNG bytes, under the names its output
text uses, with their parents and seeds) and its sources; ``calls`` stores those images in the session's own
``ImageStore``, so lineage and the session folder stay in the process that owns the session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .tools import Progress


@dataclass(frozen=True)
class MadeImage:
    """An image a remote call made: its name in the call's output text, PNG bytes, parents and seed."""

    name: str
    png: bytes
    parents: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class RemoteResult:
    """What a remote call returns: the observation (or the error a person or model can act on) and its images."""

    output: str
    images: tuple[MadeImage, ...] = ()
    sources: tuple[str, ...] = ()
    error: str | None = None
    where: str = ""  # the replica that ran it


class RemoteTools(Protocol):
    """Where tool calls for some cards go instead of this process's model manager."""

    def serves(self, card: str) -> bool: ...

    def run(
        self, card: str, tool: str, args: Mapping[str, Any], inputs: Mapping[str, bytes],
        report: Callable[[Progress], None],
    ) -> RemoteResult:  # fmt: skip
        """The call, its progress given to ``report`` as it comes; a failure to reach the replica is a ToolError."""
