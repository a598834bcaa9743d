"""The OpenAI-compatible API (``python -m orchestrator serve``): chat apps and scripts talk to the orchestrator as
if it were a model. See docs/api.md."""

from __future__ import annotations

from .app import PLAIN_MODEL, ApiOptions, create_app, refuse_public_without_key

__all__ = ["PLAIN_MODEL", "ApiOptions", "create_app", "refuse_public_without_key"]
