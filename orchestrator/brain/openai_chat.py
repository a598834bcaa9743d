"""The ``openai`` brain: OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio).

Native tool calling through LangChain's ``ChatOpenAI.bind_tools``; when the server says the model
cannot use tools, the brain switches to the ReAct text format for the rest of its life. Tool calls a
server leaves in the text (vLLM without a tool parser, small models) are parsed from the content.
The openai client retries 429 (honouring Retry-After), 5xx and dropped connections a bounded number
of times; what still fails becomes a BrainError that says what to do.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage

from .base import BrainConfig, BrainError, TurnInfo
from .history import remind_language
from .parsers import make_message, parse_tool_calls, strip_thinking
from .react import STOP, parse_react, react_messages, single_args

if TYPE_CHECKING:
    from ..tools import Tool

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
OPENAI_URL = "https://api.openai.com/v1"


def tool_specs(tools: list[Tool]) -> list[dict[str, Any]]:
    """OpenAI-style function specs, derived from ``Tool.schema()`` (also what HF chat templates take)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.schema()},
        }
        for t in tools
    ]


class OpenAIBrain:
    def __init__(self, config: BrainConfig):
        from langchain_openai import ChatOpenAI

        base_url, api_key = config.base_url or None, config.api_key
        if not api_key and not base_url:
            raise BrainError("openai_no_key")
        self.url = base_url or OPENAI_URL
        self.model = config.model or DEFAULT_MODEL
        self.react = config.tool_format == "react"
        self.native_only = config.tool_format == "native"
        self.request_timeout = config.request_timeout
        self.chat = ChatOpenAI(
            model=self.model,
            api_key=api_key or "not-needed",  # local servers accept any key
            base_url=base_url,
            timeout=config.request_timeout,
            max_retries=config.max_retries,
            use_responses_api=False,
        )

    def __repr__(self) -> str:
        return f"OpenAIBrain({self.model} at {self.url})"

    def respond(
        self, messages: list[BaseMessage], tools: list[Tool], turn: TurnInfo, timeout: float
    ) -> AIMessage:
        import openai

        timeout = max(1.0, min(self.request_timeout, timeout))
        messages = remind_language(messages, turn.language)
        try:
            if not self.react:
                try:
                    return self._native(messages, tools, timeout)
                except openai.BadRequestError as exc:
                    if self.native_only or not tools or not _tools_unsupported(exc):
                        raise
                    log.warning(
                        "%s cannot use native tools (%s); switching to the ReAct format", self.model, exc
                    )
                    self.react = True
            reply = self.chat.invoke(react_messages(messages, tools), stop=STOP, timeout=timeout)
            return parse_react(_text(reply), tools)
        except openai.APITimeoutError as exc:
            raise BrainError("server_timeout", url=self.url, seconds=round(timeout)) from exc
        except openai.APIConnectionError as exc:
            raise BrainError("server_down", url=self.url, reason=_reason(exc)) from exc
        except openai.NotFoundError as exc:
            raise BrainError("server_no_model", url=self.url, model=self.model, reason=_reason(exc)) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise BrainError("server_auth", url=self.url, status=exc.status_code) from exc
        except openai.APIStatusError as exc:
            raise BrainError(
                "server_error", url=self.url, status=exc.status_code, reason=_reason(exc)
            ) from exc

    def _native(self, messages: list[BaseMessage], tools: list[Tool], timeout: float) -> AIMessage:
        model = self.chat.bind_tools(tool_specs(tools)) if tools else self.chat
        reply = model.invoke(messages, timeout=timeout)
        if reply.tool_calls or reply.invalid_tool_calls:
            # arguments that are not strict JSON (single quotes, a trailing comma) get a second chance
            calls = [(c["name"], c["args"], c["id"]) for c in [*reply.tool_calls, *reply.invalid_tool_calls]]
            return make_message(_text(reply), calls)
        # calls the server left in the text
        return parse_tool_calls(_text(reply), [t.name for t in tools], single_args(tools))


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, list):  # content blocks
        content = "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return strip_thinking(content or "")


def _tools_unsupported(exc: Exception) -> bool:
    text = str(exc).lower()
    return "tool" in text and any(
        w in text for w in ("support", "enable-auto-tool-choice", "not allowed", "unknown")
    )


def _reason(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        detail = error.get("message") if isinstance(error, dict) else error
        if detail:
            return str(detail)[:160]
    text = str(exc.__cause__ or exc).split("\n")[0]
    return text[:160] or type(exc).__name__
