"""Chat history: stored as plain dicts in the session, trimmed to a token budget by an offline estimate.

The estimate needs no tokenizer download (tiktoken fetches its files): about 4 characters per token
for Latin text, one token per CJK character, plus a few tokens per message.
"""

from __future__ import annotations

import json
import re
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    messages_from_dict,
    messages_to_dict,
)

from .prompts import message

_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk + 3) // 4


def message_tokens(message: BaseMessage) -> int:
    text = message.content if isinstance(message.content, str) else json.dumps(message.content)
    if isinstance(message, AIMessage) and message.tool_calls:
        text += json.dumps([[c["name"], c["args"]] for c in message.tool_calls], ensure_ascii=False)
    return PER_MESSAGE + estimate_tokens(text)


def trim(history: list[BaseMessage], budget: int) -> list[BaseMessage]:
    """The most recent whole turns (each starts with a user message) whose estimate fits the budget."""
    start, total = len(history), 0
    for index in range(len(history) - 1, -1, -1):
        total += message_tokens(history[index])
        if total > budget:
            break
        if isinstance(history[index], HumanMessage):
            start = index
    return history[start:]


def load(stored: list[dict[str, Any]]) -> list[BaseMessage]:
    return messages_from_dict(stored)


def dump(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return messages_to_dict(messages)


def remind_language(messages: list[BaseMessage], language: str) -> list[BaseMessage]:
    """The messages with the answer's language restated after the last tool result, when that is the last
    message: small local models otherwise answer in the language of the (English) tool output or caption.
    The session's own messages are left as they are."""
    if not messages or not isinstance(messages[-1], ToolMessage):
        return messages
    last = messages[-1]
    reminder = message("answer_language", language)
    return [*messages[:-1], last.model_copy(update={"content": f"{last.content}\n\n{reminder}"})]


def chat_dict(msg: BaseMessage) -> dict[str, Any]:
    """A LangChain message as a chat-template message (tool-call arguments as dicts, as templates expect)."""
    content = msg.content if isinstance(msg.content, str) else str(msg.content)
    if isinstance(msg, SystemMessage):
        return {"role": "system", "content": content}
    if isinstance(msg, ToolMessage):
        return {
            "role": "tool",
            "content": content,
            "name": msg.name,
            "tool_call_id": msg.tool_call_id,
        }
    if isinstance(msg, AIMessage):
        out: dict[str, Any] = {"role": "assistant", "content": content}
        if msg.tool_calls:
            out["tool_calls"] = [
                {"type": "function", "id": c["id"], "function": {"name": c["name"], "arguments": c["args"]}}
                for c in msg.tool_calls
            ]
        return out
    return {"role": "user", "content": content}
