"""visual-orchestrator: a chat agent that sees and draws.

from orchestrator import Orchestrator
orch = Orchestrator("ImageCaptioning_cuda:0,Text2Image_cuda:0")
session = orch.new_session()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Orchestrator", "Session"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .engine import Orchestrator
    from .session import Session


def __getattr__(name: str) -> Any:  # lazy: `import orchestrator` stays instant
    if name == "Orchestrator":
        from .engine import Orchestrator

        return Orchestrator
    if name == "Session":
        from .session import Session

        return Session
    raise AttributeError(name)
