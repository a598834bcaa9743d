"""A scripted OpenAI-compatible server on 127.0.0.1, for tests that go through the real HTTP client.

    from scripted_llm import ScriptedLLM, reply, tool_call, Response

    with ScriptedLLM([tool_call("text2image", prompt="a cat"), reply("Here it is.")]) as llm:
        orch = Orchestrator(..., brain="openai", brain_options={"base_url": llm.url})
        session.chat("draw a cat")
        llm.requests[1]["messages"][-1]   # what the client sent (parsed JSON)

Each ``POST /v1/chat/completions`` takes the next item of the script:

- a dict: a chat completion (``reply()``, ``tool_call()``, ``tool_calls()`` build them);
- a ``Response(status, body, headers, delay)``: any status code, a Retry-After header, a slow answer;
- a callable ``f(request) -> dict | Response``: an answer that depends on what was asked.

When the script runs out the server answers HTTP 500 "script exhausted", which fails the test
visibly. ``GET /v1/models`` lists the one model.

A request with ``"stream": true`` gets the same answer as server-sent events, the way vLLM and Ollama send it:
the content in pieces of ``piece`` characters, each tool call's arguments in pieces too, then a chunk with the
``finish_reason`` and ``data: [DONE]``. A ``Stream(...)`` item scripts the stream itself: its own pieces, a
pause between them, or a broken ending (``cut``: the connection closes early; ``garbage``: a line that is not
JSON; ``error``: an error event in the middle).

``ScriptedLLM(models={"qwen2.5:7b": ["completion", "tools"], ...})`` plays a local Ollama instead: those models
in ``GET /v1/models`` and ``GET /api/tags``, and their ``capabilities`` from ``POST /api/show``.
``ScriptedLLM(lmstudio={"qwen2.5-7b-instruct": ["tool_use"], ...})`` plays LM Studio (``GET /api/v0/models``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "scripted-model"


@dataclass
class Response:
    status: int = 200
    body: Any = None  # a dict is sent as JSON, a str as it is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering


@dataclass
class Stream:
    """A streamed answer: ``pieces`` of content as they are sent (or a completion dict, cut into pieces)."""

    pieces: list[str] | dict[str, Any] = field(default_factory=list)
    delay: float = 0.0  # seconds between pieces
    cut: str | None = None  # "eof": closed before finish_reason and [DONE]; "short": closed mid-body
    garbage: str | None = None  # sent as a data line after the pieces
    error: str | None = None  # an error event after the pieces
    finish_reason: str = "stop"
    piece: int = 3  # characters per piece when ``pieces`` is a completion
    gate: threading.Event | None = None  # after ``gate_after`` pieces, wait until the test sets it
    gate_after: int = 1


def completion(message: dict[str, Any], finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def reply(text: str) -> dict[str, Any]:
    """The model answers with text."""
    return completion({"role": "assistant", "content": text})


def tool_calls(*calls: tuple[str, dict[str, Any] | str], content: str | None = None) -> dict[str, Any]:
    """The model calls tools: (name, arguments) pairs; a str is sent as the raw arguments (e.g. broken JSON)."""
    raw = [
        {
            "id": f"call_{uuid.uuid4().hex[:10]}",
            "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
        }
        for name, args in calls
    ]
    return completion({"role": "assistant", "content": content, "tool_calls": raw}, "tool_calls")


def tool_call(name: str, **args: Any) -> dict[str, Any]:
    """The model calls one tool with these arguments."""
    return tool_calls((name, args))


def last_tool_output(request: dict[str, Any]) -> str:
    """The content of the last tool message the client sent (to script answers that name new images)."""
    return next(m["content"] for m in reversed(request["messages"]) if m["role"] == "tool")


class ScriptedLLM:
    def __init__(
        self,
        script: Iterable[dict[str, Any] | Response | Callable[[dict[str, Any]], Any]] = (),
        models: dict[str, list[str]] | None = None,
        lmstudio: dict[str, list[str]] | None = None,
    ):
        self.script = list(script)
        self.models = models  # name -> Ollama capabilities; None: the one scripted model, no Ollama API
        self.lmstudio = lmstudio  # name -> LM Studio capabilities (GET /api/v0/models); None: no such API
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0  # streams the client stopped reading before their end
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def add(self, *items: Any) -> None:
        with self._lock:
            self.script.extend(items)

    def __enter__(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, request: dict[str, Any]) -> Response:
        with self._lock:
            self.requests.append(request)
            item = (
                self.script.pop(0)
                if self.script
                else Response(500, {"error": {"message": "script exhausted"}})
            )
        if callable(item):
            item = item(request)
        if request.get("stream") and not isinstance(item, Response | Stream):
            item = Stream(item)
        if isinstance(item, Stream) and not request.get("stream"):
            item = completion({"role": "assistant", "content": "".join(item.pieces)}, item.finish_reason)
        return item if isinstance(item, Response | Stream) else Response(200, item)


def stream_chunks(stream: Stream) -> list[dict[str, Any]]:
    """The chunks of a streamed answer (without the broken ending a ``Stream`` may script)."""
    if isinstance(stream.pieces, dict):
        message = stream.pieces["choices"][0]["message"]
        finish = stream.pieces["choices"][0]["finish_reason"]
        text, n = message.get("content") or "", stream.piece
        deltas: list[dict[str, Any]] = [{"content": text[i : i + n]} for i in range(0, len(text), n)]
        for index, call in enumerate(message.get("tool_calls") or []):
            args = call["function"]["arguments"]
            head = {"index": index, "id": call["id"], "type": "function"}
            deltas.append(
                {"tool_calls": [{**head, "function": {"name": call["function"]["name"], "arguments": ""}}]}
            )
            deltas += [{"tool_calls": [{"index": index, "function": {"arguments": args[i : i + n + 1]}}]}
                       for i in range(0, len(args), n + 1)]  # fmt: skip
    else:
        deltas, finish = [{"content": piece} for piece in stream.pieces], stream.finish_reason
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": MODEL}  # fmt: skip
    first = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
    ]
    body = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    last = [{**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}]
    return first + body + last


def _handler(llm: ScriptedLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                request = {}
            if llm.models is not None and self.path == "/api/show" and request.get("model") in llm.models:
                return self._send(Response(200, {"capabilities": llm.models[request["model"]]}))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(Response(404, {"error": {"message": f"no route {self.path}"}}))
            answer = llm._next(request)
            if isinstance(answer, Stream):
                return self._stream(answer)
            self._send(answer)

        def do_GET(self) -> None:  # noqa: N802
            names = list(llm.models or llm.lmstudio or [MODEL])
            if llm.lmstudio is not None and self.path == "/api/v0/models":
                data = [
                    {"id": n, "object": "model", "type": "llm", "capabilities": c}
                    for n, c in llm.lmstudio.items()
                ]
                return self._send(Response(200, {"object": "list", "data": data}))
            if self.path.rstrip("/").endswith("/models"):
                data = [{"id": name, "object": "model"} for name in names]
                return self._send(Response(200, {"object": "list", "data": data}))
            if llm.models is not None and self.path == "/api/tags":
                return self._send(Response(200, {"models": [{"name": n, "model": n} for n in names]}))
            self._send(Response(404, {"error": {"message": f"no route {self.path}"}}))

        def _send(self, response: Response) -> None:
            if response.delay:
                time.sleep(response.delay)
            body = response.body if isinstance(response.body, str) else json.dumps(response.body or {})
            data = body.encode()
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                pass

        def _stream(self, stream: Stream) -> None:
            chunks = stream_chunks(stream)
            lines = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks[:-1]]
            if stream.garbage is not None:
                lines.append(f"data: {stream.garbage}\n\n".encode())
            if stream.error is not None:
                lines.append(f"data: {json.dumps({'error': {'message': stream.error}})}\n\n".encode())
            if stream.cut is None:
                lines += [f"data: {json.dumps(chunks[-1])}\n\n".encode(), b"data: [DONE]\n\n"]
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                if stream.cut == "short":  # promises more than it sends, then closes: a dropped connection
                    self.send_header("Content-Length", str(sum(map(len, lines)) + 1000))
                self.end_headers()
                for index, line in enumerate(lines):
                    if stream.gate is not None and index == stream.gate_after + 1:  # +1: the role chunk
                        stream.gate.wait(10)
                    self.wfile.write(line)
                    self.wfile.flush()
                    if stream.delay or stream.gate is not None:
                        time.sleep(stream.delay or 0.01)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
                with llm._lock:
                    llm.disconnects += 1
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
