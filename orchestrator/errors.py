"""Errors a user or a model can fix: one sentence that says what is wrong and what to do.

Anything else is a bug and raises normally.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class: the message is meant to be shown to a person as it is."""


class CardError(OrchestratorError):
    """model_cards.yaml is invalid; the message names the card and the field."""


class SpecError(OrchestratorError):
    """A --load / --max-vram spec cannot be understood or placed (CLI exit code 2)."""


class PlacementError(SpecError):
    """The requested models do not fit on the requested devices."""


class MissingWeightsError(OrchestratorError):
    """A checkpoint is not on disk and cannot be fetched; says which and how to get it."""


class ImageError(OrchestratorError):
    """An upload or an image name was refused; nothing was stored."""


class KnowledgeError(OrchestratorError):
    """A document or a knowledge base was refused (bad file, busy base, unknown name); the base is unchanged."""


class ToolError(OrchestratorError):
    """A tool call failed in a way the caller (person or LLM) can act on."""


def shown(text: object, limit: int = 60) -> str:
    """User or model text, safe to quote in a one-line message: escaped and shortened."""
    escaped = repr(str(text))[1:-1]
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"
