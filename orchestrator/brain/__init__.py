"""The brain: what decides which tools to call, in what order, and writes the answer.

Three kinds, chosen by ``Orchestrator(brain=...)`` / ``--brain`` (``auto``, the default, picks one: see
``BrainConfig.from_spec``):

- ``openai``: OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio), through LangChain.
- ``hf:<id-or-path>``: a transformers chat model in this process (optionally int8/int4 on CUDA).
- ``rules``: no LLM; keyword routing and ``/tool_name key=value`` commands. The fallback when no LLM is set.

Every brain answers ``respond(messages, tools, turn, timeout) -> AIMessage`` (LangChain messages in
and out); the loop in ``orchestrator/agent.py`` runs the tool calls. Importing this package is cheap:
LangChain, openai and transformers are imported by the brain that needs them, when it is made.
"""

from __future__ import annotations

import threading
from typing import Any

from ..settings import Settings
from .base import Brain, BrainConfig, BrainError, TurnInfo

__all__ = ["Brain", "BrainConfig", "BrainError", "LazyBrain", "TurnInfo", "brain_from", "make_brain"]


def make_brain(config: BrainConfig) -> Brain:
    """Build the brain (an hf model loads here). Raises BrainError."""
    if config.kind == "openai":
        from .openai_chat import OpenAIBrain

        return OpenAIBrain(config)
    if config.kind == "hf":
        from .hf_local import HFBrain

        return HFBrain(config)
    from .rules import RulesBrain

    return RulesBrain()


class LazyBrain:
    """The orchestrator's brain, made on first use (an hf model loads on the first chat) and shared."""

    def __init__(self, config: BrainConfig, brain: Brain | None = None):
        self.config = config
        self._brain = brain
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._brain is not None

    @property
    def label(self) -> str:
        return f"hf:{self.config.model}" if self.config.kind == "hf" else self.config.kind

    def get(self) -> Brain:
        with self._lock:
            if self._brain is None:
                self._brain = make_brain(self.config)
            return self._brain


def brain_from(
    brain: str | BrainConfig | Brain | None = None, settings: Settings | None = None, **options: Any
) -> LazyBrain:
    """The orchestrator's brain from ``Orchestrator(brain=...)``: a spec string, a config, or a ready brain."""
    if isinstance(brain, BrainConfig):
        return LazyBrain(brain)
    if brain is None or isinstance(brain, str):
        return LazyBrain(BrainConfig.from_spec(brain, settings, **options))
    if not callable(getattr(brain, "respond", None)):
        raise TypeError(
            f"brain must be 'auto', 'openai', 'rules', 'hf:<model>', a BrainConfig or a Brain, not {brain!r}"
        )
    return LazyBrain(BrainConfig(kind="custom", **{k: v for k, v in options.items() if v is not None}), brain)
