"""An OpenAI ``messages`` list as a session: the images of earlier turns found again from their URLs.

The API is stateless: a follow-up ("now make it blue") arrives with the whole conversation, whose assistant
turns hold the Markdown image URLs this server returned. Each request gets a fresh session; every image the
conversation shows (our URLs, ``data:`` uploads) is imported into it again, its earlier name replaced by the new
one wherever the text mentions it, and the text becomes the session's history. So the brain sees one coherent
conversation, and a client can reach only images whose URLs it was given.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from ..brain.history import dump
from ..brain.prompts import detect_language, upload_announcement
from ..errors import ImageError
from ..session import Session
from .links import Links

OUR_IMAGE = re.compile(r"(?:https?://[^\s)\"']+)?/v1/images/([A-Za-z0-9_-]{40,})\.png(?:\?[^\s)\"']*)?")
MARKDOWN_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
DETAILS = re.compile(r"<details>.*?</details>", re.S)
DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.I)
MAX_SYSTEM_CHARS = 4000


class ApiError(Exception):
    """A request the API refuses: an HTTP status and one sentence, sent in OpenAI's error shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Message:
    role: str  # "user" or "assistant"
    text: str
    images: list[bytes | Path] = field(default_factory=list)  # data: uploads, and our images found again
    linked: list[str] = field(default_factory=list)  # for each of ours in ``images``: its earlier name


@dataclass
class Conversation:
    system: str  # the client's own system messages (a NextChat mask's context), joined
    earlier: list[Message]
    last: Message


def read_messages(
    messages: Any, links: Links, owner: str, max_images: int, fetch: Callable[[str], bytes] | None
) -> Conversation:
    """The request's messages, checked; images decoded (``fetch`` reads an http(s) URL, None: refused)."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of messages.", param="messages")
    system, turns = [], []
    for index, raw in enumerate(messages):
        if not isinstance(raw, dict) or raw.get("role") not in (
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
        ):
            raise ApiError(
                400, f"messages[{index}] needs a role of system, user or assistant.", param="messages"
            )
        role = raw["role"]
        if role == "tool":  # tool results of the client's own tools: not ours to replay
            continue
        text, images, linked = _content(raw.get("content"), index, links, owner, fetch)
        if len(images) > max_images:
            raise ApiError(400, f"messages[{index}] has {len(images)} images; at most {max_images} are allowed "
                           "per message.", param="messages")  # fmt: skip
        if role in ("system", "developer"):
            system.append(text)
        else:
            turns.append(Message(role, text, images, linked))
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "The last message must be the user's.", param="messages")
    return Conversation("\n\n".join(system).strip()[:MAX_SYSTEM_CHARS], turns[:-1], turns[-1])


def _content(content: Any, index: int, links: Links, owner: str,
             fetch: Callable[[str], bytes] | None) -> tuple[str, list[bytes | Path], list[str]]:  # fmt: skip
    if content is None or isinstance(content, str):
        parts: list[Any] = [{"type": "text", "text": content or ""}]
    elif isinstance(content, list):
        parts = content
    else:
        raise ApiError(
            400, f"messages[{index}].content must be a string or a list of parts.", param="messages"
        )
    texts, images, linked = [], [], []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text") or ""))
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            image, name = _image(str(url or ""), index, links, owner, fetch)
            images.append(image)
            linked.append(name)
        else:
            raise ApiError(400, f"messages[{index}] has a content part of type {kind!r}; text and image_url are "
                           "understood.", param="messages")  # fmt: skip
    text = "\n".join(texts)
    for match in OUR_IMAGE.finditer(text):  # our images shown in the text (assistant replies)
        link = links.get(match.group(1), owner)
        if link is not None and link.path not in images:
            images.append(link.path)
            linked.append(link.name)
    return text, images, linked


def _image(url: str, index: int, links: Links, owner: str,
           fetch: Callable[[str], bytes] | None) -> tuple[bytes | Path, str]:  # fmt: skip
    ours = OUR_IMAGE.fullmatch(url) or OUR_IMAGE.match(url)
    if ours:
        link = links.get(ours.group(1), owner)
        if link is None:
            raise ApiError(400, f"messages[{index}] shows an image whose URL expired or is not yours; upload it "
                           "again.", param="messages")  # fmt: skip
        return link.path, link.name
    if DATA_URL.match(url):
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True), ""
        except (binascii.Error, ValueError):
            raise ApiError(
                400, f"messages[{index}] has an image data: URL that is not valid base64."
            ) from None
    if url.startswith(("http://", "https://")):
        if fetch is None:
            raise ApiError(400, f"messages[{index}] links an image by an http(s) URL; send it as a data: URL "
                           "(this server was not started with --allow-image-urls).", param="messages")  # fmt: skip
        return fetch(url), ""
    raise ApiError(400, f"messages[{index}] has an image_url that is neither a data: URL nor http(s).")


def prepare(session: Session, conversation: Conversation) -> dict[str, str]:
    """Import the earlier turns into ``session`` (images stored again, history written); returns the map from
    each earlier image name to its name in this session."""
    renamed: dict[str, str] = {}
    history: list[BaseMessage] = []
    for message in conversation.earlier:
        lines = []
        for image, old in zip(message.images, message.linked):
            try:
                name = session.upload(image)
            except ImageError as exc:
                raise ApiError(400, f"An earlier image could not be read again: {exc}") from exc
            if old:
                renamed[old] = name
            elif message.role == "user":
                lines.append(upload_announcement(detect_language(message.text, session.language), name, None))
        text = rename(_plain(message.text), renamed)
        if message.role == "user":
            history.append(HumanMessage("\n".join([*lines, text]).strip()))
        else:
            history.append(AIMessage(text))
    session.history = dump(history)
    return renamed


def rename(text: str, renamed: dict[str, str]) -> str:
    for old, new in renamed.items():
        text = text.replace(old, new)
    return text


def _plain(text: str) -> str:
    """A reply as the brain should read it again: without the tool-step blocks, images as their names."""
    text = DETAILS.sub("", text)
    text = MARKDOWN_IMAGE.sub(lambda m: m.group(1), text)  # the alt text is the image's name
    return re.sub(r"\n{3,}", "\n\n", text).strip()
