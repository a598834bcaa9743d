"""What every brain shares: its configuration, the turn facts it may read, the protocol it answers, its error.

Kept apart from the package's ``__init__`` so that each brain imports these without importing the factory
that imports the brains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..errors import OrchestratorError
from ..settings import Settings
from .prompts import message

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage, BaseMessage

    from ..tools import Tool

QUANTS = ("int8", "int4")
ToolFormat = Literal["auto", "native", "react"]


class BrainError(OrchestratorError):
    """The brain cannot answer (server down, model missing, bad --brain); the message says what to do.

    The message exists in English (``str(exc)``) and in the user's language (``exc.text(language)``).
    """

    def __init__(self, key: str, **params: Any):
        self.key, self.params = key, params
        super().__init__(message(key, "en", **params))

    def text(self, language: str) -> str:
        return message(self.key, language, **self.params)


@dataclass(frozen=True)
class TurnInfo:
    """What a brain may know about the turn besides the messages."""

    text: str  # the user's words, without the upload announcement
    language: str  # "en" or "zh", detected from this turn's text
    images: tuple[str, ...] = ()  # every image in the session, oldest first
    uploads: tuple[str, ...] = ()  # images uploaded with this turn


class Brain(Protocol):
    def respond(
        self, messages: list[BaseMessage], tools: list[Tool], turn: TurnInfo, timeout: float
    ) -> AIMessage:
        """The next assistant message: tool calls to run, or the final answer. Raises BrainError."""
        ...


@dataclass(frozen=True)
class BrainConfig:
    kind: Literal["openai", "hf", "rules", "custom"] = "rules"
    model: str | None = None  # openai: the model name; hf: the hub id or local folder
    quant: str | None = None  # hf only: int8 or int4 (bitsandbytes, CUDA)
    trust_remote_code: bool = False  # hf only: for older ChatGLM-style repositories
    adapter: str | None = None  # hf only: a peft adapter folder (``finetune --out``) loaded over the model
    tool_format: ToolFormat = "auto"  # auto: native tool calling when the model supports it, else ReAct text
    base_url: str | None = None  # openai: defaults to Settings.openai_base_url ($OPENAI_BASE_URL)
    api_key: str | None = None  # openai: defaults to Settings.openai_api_key ($OPENAI_API_KEY)
    device: str | None = None  # hf: defaults to cuda, then mps, then cpu
    request_timeout: float = 120.0  # seconds for one LLM request
    max_retries: int = 2  # retries of one request (429 with Retry-After, 5xx, dropped connections)
    max_steps: int = 8  # model calls per user turn
    max_tool_calls: int = 16  # tool calls per user turn (a model asking for 50 at once gets 16 run)
    turn_seconds: float = 600.0  # wall-clock limit per user turn
    history_tokens: int = 6000  # earlier turns kept for the model (estimated tokens)
    max_new_tokens: int = 512  # hf: tokens generated per step
    fallback: bool = False  # rules because no LLM is configured or found (the session is told once)
    chosen: str = ""  # auto: "env" (configured), "found:<server>" (on this machine) or "none"; "" if named

    @classmethod
    def from_spec(
        cls, brain: str | None = None, settings: Settings | None = None, **options: Any
    ) -> BrainConfig:
        """``auto`` (or None), ``openai``, ``rules`` or ``hf:<id-or-path>``.

        ``auto``: openai when ``settings`` name an OpenAI-compatible server (``OPENAI_API_KEY``/``OPENAI_BASE_URL``);
        else a server found on this machine (``discovery.discover`` over ``settings.local_llm_ports``, unless
        ``settings.discover_local_llm`` is off); else rules, as a fallback the session is told about. An openai
        brain takes its URL, key and model from ``settings`` unless ``options`` give them."""
        settings = settings or Settings()
        options = {k: v for k, v in options.items() if v is not None}
        spec = (brain or "").strip()
        if spec in ("", "auto"):
            config = cls._auto(settings, options)
        elif spec in ("openai", "rules"):
            config = cls(kind=spec, **options)
        elif spec.startswith("hf:") and spec[3:].strip():
            config = cls(**{**options, "kind": "hf", "model": spec[3:].strip()})
        else:
            raise BrainError("bad_brain", brain=spec)
        if config.kind == "openai":
            config = replace(config, base_url=config.base_url or settings.openai_base_url,
                             api_key=config.api_key or settings.openai_api_key,
                             model=config.model or settings.openai_model)  # fmt: skip
            if not (config.api_key or config.base_url):
                raise BrainError("openai_no_key")
        if config.quant is not None and config.quant not in QUANTS:
            raise BrainError("bad_quant", quant=config.quant)
        if config.quant is not None and config.kind != "hf":
            raise BrainError("quant_needs_hf", quant=config.quant)
        if config.adapter is not None and config.kind != "hf":
            raise BrainError("adapter_needs_hf", adapter=config.adapter)
        return config

    @classmethod
    def _auto(cls, settings: Settings, options: dict[str, Any]) -> BrainConfig:
        if settings.openai_configured:
            return cls(kind="openai", chosen="env", **options)
        if settings.discover_local_llm and not options.get("base_url"):
            from .discovery import discover

            found = discover(settings.local_llm_ports)
            if found is not None:
                model = settings.openai_model or found.model  # OPENAI_MODEL names a model on the server found
                options = {"model": model, **options, "kind": "openai", "base_url": found.base_url}
                return cls(**options, chosen=f"found:{found.name}")
        if options.get("base_url"):
            return cls(kind="openai", chosen="env", **options)
        return cls(kind="rules", fallback=True, chosen="none", **options)

    def notice(self, language: str = "en") -> str | None:
        """What the session shows once about how an ``auto`` brain was chosen; None when it was named."""
        if self.fallback:
            return message("rules_fallback", language)
        if self.chosen == "env":
            return message("brain_configured", language, url=self.base_url or "api.openai.com",
                           model=self.model or "gpt-4o-mini")  # fmt: skip
        if self.chosen.startswith("found:"):
            return message(
                "brain_found", language, server=self.chosen[6:], url=self.base_url, model=self.model
            )
        return None

    def with_options(self, **options: Any) -> BrainConfig:
        return replace(self, **options)
