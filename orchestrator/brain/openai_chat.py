"""The ``openai`` brain: OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio).

Native tool calling through LangChain's ``ChatOpenAI.bind_tools``; when the server says the model
cannot use tools, the brain switches to the ReAct text format for the rest of its life. Tool calls a
server leaves in the text (vLLM without a tool parser, small models) are parsed from the content.
The openai client retries 429 (honouring Retry-After), 5xx and dropped connections a bounded number
of times; what still fails becomes a BrainError that says what to do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator
from contextlib import closing, nullcontext
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, BaseMessageChunk

from .base import BrainConfig, BrainError, TurnInfo
from .history import remind_language
from .parsers import make_message, parse_tool_calls, strip_thinking
from .react import STOP, parse_react, react_messages, single_args
from .streaming import CallGuard, ReactGuard, drain

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
        return drain(self.stream(messages, tools, turn, timeout))

    def stream(
        self, messages: list[BaseMessage], tools: list[Tool], turn: TurnInfo, timeout: float
    ) -> Generator[str, None, AIMessage]:
        """The next message, its text yielded as it arrives (never a tool call written as text); returns the
        whole message. A stream that breaks or stops before its end is a BrainError."""
        import openai

        timeout = max(1.0, min(self.request_timeout, timeout))
        messages = remind_language(messages, turn.language)
        try:
            if not self.react:
                try:
                    return (yield from self._native(messages, tools, timeout))
                except openai.BadRequestError as exc:  # raised before the first piece: nothing was shown
                    if self.native_only or not tools or not _tools_unsupported(exc):
                        raise
                    log.warning(
                        "%s cannot use native tools (%s); switching to the ReAct format", self.model, exc
                    )
                    self.react = True
            chunks = self.chat.stream(react_messages(messages, tools), stop=STOP, timeout=timeout)
            text, _ = yield from _read(chunks, ReactGuard())
            return parse_react(text, tools)
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
        except StreamBroken as exc:
            raise BrainError("stream_broken", url=self.url, reason=str(exc)[:160]) from exc
        except (openai.APIError, json.JSONDecodeError) as exc:  # an error event or bad chunk, before any text
            raise BrainError("stream_broken", url=self.url, reason=_root_reason(exc)[:160]) from exc

    def _native(
        self, messages: list[BaseMessage], tools: list[Tool], timeout: float
    ) -> Generator[str, None, AIMessage]:
        model = self.chat.bind_tools(tool_specs(tools)) if tools else self.chat
        guard = CallGuard([t.name for t in tools])
        text, calls = yield from _read(model.stream(messages, timeout=timeout), guard)
        if calls:  # arguments that are not strict JSON (single quotes, a trailing comma) get a second chance
            return make_message(text, calls)
        # calls the server left in the text
        return parse_tool_calls(text, [t.name for t in tools], single_args(tools))


class StreamBroken(Exception):
    """A streamed answer that stopped before its end: a dropped connection, a chunk that is not JSON, an error
    event, or no finish reason."""


def _read(
    chunks: Iterator[BaseMessageChunk], guard: CallGuard | ReactGuard
) -> Generator[str, None, tuple[str, list[tuple[str, str, str | None]]]]:
    """Yield the shown text of a LangChain chunk stream as it comes; return (the whole text, the native calls as
    (name, raw arguments, id)). A call's arguments are kept as the text the server sent, so that a call cut off
    mid-way is an invalid call the model is told about, not one completed by guesswork. A stream that ends
    without a finish reason was cut off (the server died, or a proxy dropped it)."""
    whole: BaseMessageChunk | None = None
    with closing(chunks) if hasattr(chunks, "close") else nullcontext():  # type: ignore[arg-type]
        try:
            for chunk in chunks:
                whole = chunk if whole is None else whole + chunk
                piece = guard.feed(_text(chunk, strip=False))
                if piece:
                    yield piece
        except Exception as exc:  # once the answer began, any failure is the stream breaking off
            if whole is None:
                raise
            raise StreamBroken(_root_reason(exc)) from exc
    if whole is None or not whole.response_metadata.get("finish_reason"):
        raise StreamBroken("the stream ended before the reply did")
    calls = [(c.get("name") or "", c.get("args") or "", c.get("id"))
             for c in getattr(whole, "tool_call_chunks", [])]  # fmt: skip
    return _text(whole), calls


def _text(message: BaseMessage, strip: bool = True) -> str:
    content = message.content
    if isinstance(content, list):  # content blocks
        content = "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return strip_thinking(content or "") if strip else content or ""


def _tools_unsupported(exc: Exception) -> bool:
    text = str(exc).lower()
    return "tool" in text and any(
        w in text for w in ("support", "enable-auto-tool-choice", "not allowed", "unknown")
    )


def _root_reason(exc: BaseException) -> str:
    """The first line of the innermost cause (``peer closed connection…`` rather than ``Connection error.``)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc).split("\n")[0] or type(exc).__name__


def _reason(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        detail = error.get("message") if isinstance(error, dict) else error
        if detail:
            return str(detail)[:160]
    text = str(exc.__cause__ or exc).split("\n")[0]
    return text[:160] or type(exc).__name__
