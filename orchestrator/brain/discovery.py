"""``--brain auto``: find an OpenAI-compatible server running on this machine (Ollama, LM Studio, llama.cpp, vLLM).

Each known port on 127.0.0.1 is asked for ``GET /v1/models`` at the same time, with short timeouts and one
deadline for all of them (well under a second), through ``http.client`` so no proxy and no other host is
ever contacted. Each is also asked Ollama's ``POST /api/show`` for the models' ``capabilities``, and LM Studio's
``GET /api/v0/models`` for theirs (``tool_use``); other servers answer 404 at once.
The model chosen is the first that can call tools, by the preference list below; else the first by name.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # loopback only: nothing leaves this machine
SERVERS = {11434: "Ollama", 1234: "LM Studio", 8080: "llama.cpp", 8000: "vLLM"}
DEADLINE_S = 0.6  # for the whole probe, every port together
REQUEST_TIMEOUT_S = 0.3
# Model families that call tools well, best first (a name containing the key); other names come after.
PREFERRED = (
    "qwen3",
    "qwen2.5",
    "llama3.1",
    "llama3.3",
    "llama3.2",
    "mistral",
    "glm4",
    "hermes3",
    "llama4",
)
SKIPPED = ("embed", "bge", "nomic", "whisper", "rerank", "clip", "llava", "vision")  # not chat models
PULL_COMMAND = "ollama pull qwen2.5:7b"


@dataclass(frozen=True)
class LocalServer:
    """A server that answered, and the model chosen on it."""

    name: str  # "Ollama", "LM Studio", ... (by port)
    base_url: str
    model: str
    tools: bool | None  # whether the server says the model can call tools; None: it does not say
    models: tuple[str, ...] = ()


def discover(
    ports: tuple[int, ...] | list[int] = tuple(SERVERS),
    host: str = HOST,
    deadline: float = DEADLINE_S,
    timeout: float = REQUEST_TIMEOUT_S,
) -> LocalServer | None:
    """The first server in ``ports`` order that lists a chat model, or None. Never raises, never waits past
    ``deadline`` seconds; a port that answers garbage or hangs counts as nothing there."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"discovery probes this machine only, not {host!r}")
    end = time.monotonic() + deadline
    pool = ThreadPoolExecutor(max_workers=max(1, len(ports)), thread_name_prefix="brain-discovery")
    try:
        futures = [pool.submit(_probe, host, port, timeout, end) for port in ports]
        for future in futures:  # in ports order: a later port never waits for an earlier one's answer
            try:
                found = future.result(timeout=max(0.0, end - time.monotonic()))
            except Exception:  # a timeout, or a bug in a probe: nothing usable there
                continue
            if found:
                return found
        return None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _probe(host: str, port: int, timeout: float, end: float) -> LocalServer | None:
    listing = _get_json(host, port, "GET", "/v1/models", None, timeout, end)
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return None
    names = [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
    chat = [n for n in names if not any(s in n.lower() for s in SKIPPED)] or names
    if not chat:
        return None
    capable = _ollama_tool_models(host, port, chat, timeout, end)  # others answer 404 at once
    server = "Ollama" if capable is not None else SERVERS.get(port, f"a server on port {port}")
    if capable is None:
        capable = _lmstudio_tool_models(host, port, chat, timeout, end)
        server = "LM Studio" if capable is not None else server
    model = choose_model(chat, capable)
    tools = None if capable is None else model in capable
    log.info("found %s at %s:%d with %d models; chose %s", server, host, port, len(chat), model)
    return LocalServer(server, f"http://{host}:{port}/v1", model, tools, tuple(chat))


def _ollama_tool_models(
    host: str, port: int, names: list[str], timeout: float, end: float
) -> set[str] | None:
    """The models Ollama says can call tools (``capabilities`` of ``/api/show``), or None if it does not say."""
    capable, said = set(), False
    for name in sorted(names, key=_rank)[:6]:  # the likeliest first; the deadline bounds the rest
        shown = _get_json(host, port, "POST", "/api/show", {"model": name}, timeout, end)
        capabilities = shown.get("capabilities") if isinstance(shown, dict) else None
        if isinstance(capabilities, list):
            said = True
            if "tools" in capabilities:
                capable.add(name)
                break
    return capable if said else None


def _lmstudio_tool_models(
    host: str, port: int, names: list[str], timeout: float, end: float
) -> set[str] | None:
    """The models LM Studio's REST API says can call tools (``"capabilities": ["tool_use"]``), or None if it
    does not say (not LM Studio, or a version without capabilities)."""
    listing = _get_json(host, port, "GET", "/api/v0/models", None, timeout, end)
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return None
    entries = [m for m in data if isinstance(m, dict) and m.get("id") in names]
    if not any(isinstance(m.get("capabilities"), list) for m in entries):
        return None
    return {
        m["id"]
        for m in entries
        if "tool_use" in (m.get("capabilities") or []) and m.get("type") != "embeddings"
    }


def choose_model(names: list[str], capable: set[str] | None = None) -> str:
    """A model that can call tools if the server named any, best by ``PREFERRED``; else the best by name."""
    pool = [n for n in names if n in capable] if capable else []
    return sorted(pool or names, key=_rank)[0]


def _rank(name: str) -> int:
    lowered = name.lower().replace("-", "").replace("_", "")
    return next((i for i, key in enumerate(PREFERRED) if key.replace("-", "") in lowered), len(PREFERRED))


def _get_json(
    host: str, port: int, method: str, path: str, body: Any, timeout: float, end: float
) -> Any | None:
    left = min(timeout, end - time.monotonic())
    if left <= 0:
        return None
    connection = http.client.HTTPConnection(host, port, timeout=left)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            return None
        return json.loads(response.read(1_000_000) or b"null")
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        connection.close()
