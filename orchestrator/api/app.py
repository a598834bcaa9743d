"""The OpenAI-compatible HTTP API: ``GET /v1/models``, ``POST /v1/chat/completions`` (streamed or not) and the
images its replies show. FastAPI, because Gradio already serves with it: the same app can be mounted beside
the chat UI in one process (``gradio_app.py --api``).

Each request is one turn of a fresh session rebuilt from the messages the client sends (conversation.py); the
turn runs in a worker thread, and a client that goes away mid-stream stops it at its next step (the brain's
request is closed; images already made stay).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from ..brain.history import estimate_tokens
from ..brain.prompts import detect_language
from ..events import Event, TurnFinished
from ..personas import Persona, load_personas
from .conversation import ApiError, Conversation, prepare, read_messages, rename
from .links import Links, owner_of
from .render import Markdown

if TYPE_CHECKING:
    from ..engine import Orchestrator
    from ..session import Session

log = logging.getLogger(__name__)

PLAIN_MODEL = "visual-orchestrator"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ApiOptions:
    api_key: str | None = None  # required as a bearer key on every route when set
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API ("*" for any)
    max_body_bytes: int = 25 * 2**20
    max_images_per_message: int = 4
    max_turns_in_flight: int = 2  # per key (or for everyone, without a key)
    image_ttl_s: float = 3600.0  # image URLs, and the sessions behind them, expire after this
    allow_image_urls: bool = False  # fetch http(s) image_url parts (public addresses only, upload limits)
    public_url: str | None = None  # the base of image URLs (behind a proxy); else the request's own
    mcp: bool = True  # the MCP server (Streamable HTTP) at /mcp of the same app
    host: str = "127.0.0.1"  # what is served on (the MCP server refuses other Host headers on loopback)


def refuse_public_without_key(host: str, api_key: str | None) -> str | None:
    """Why serving on ``host`` must be refused (one sentence), or None."""
    if host in LOOPBACK or api_key:
        return None
    return (f"Serving on {host} without --api-key would let anyone who can reach this machine use its models and "
            "see its images; add --api-key KEY (or VISUAL_ORCHESTRATOR_API_KEY), or serve on 127.0.0.1.")  # fmt: skip


def create_app(orchestrator: Orchestrator, options: ApiOptions | None = None,
               personas: dict[str, Persona] | None = None,
               fetch_image: Callable[[str], bytes] | None = None) -> FastAPI:  # fmt: skip
    """The API over ``orchestrator``. ``fetch_image`` reads an http(s) image URL when ``allow_image_urls``."""
    options = options or ApiOptions()
    if options.allow_image_urls and fetch_image is None:
        fetch_image = guarded_image_fetcher(orchestrator)
    if personas is None:
        personas = load_personas(orchestrator.settings.persona_dir)
    api = Api(orchestrator, options, personas, fetch_image if options.allow_image_urls else None)
    mcp_app = None
    if options.mcp:
        from ..mcp_server import streamable_http_app

        mcp_app = streamable_http_app(orchestrator, options.api_key, host=options.host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if mcp_app is None:
            yield
            return
        async with mcp_app.router.lifespan_context(mcp_app):  # the MCP SDK's session manager
            yield

    app = FastAPI(
        title="visual-orchestrator", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    if mcp_app is not None:
        app.add_middleware(PathDispatch, path="/mcp", target=mcp_app)
    if options.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(options.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"])  # fmt: skip
    app.state.api = api

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        api.authorize(request)
        return JSONResponse({"object": "list", "data": api.models()})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        owner = api.authorize(request)
        body = await read_body(request, options.max_body_bytes)
        return await api.chat(request, owner, body)

    @app.get("/v1/images/{file}")
    async def image(file: str, request: Request) -> FileResponse:
        token = file.removesuffix(".png")
        link = api.links.get(token)
        if link is None or not api.may_see(request, token, link.owner):
            raise ApiError(404, "There is no such image, or its URL expired.", code="not_found")
        return FileResponse(
            link.path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
        )

    return app


def guarded_image_fetcher(orchestrator: Orchestrator) -> Callable[[str], bytes]:
    """Reads an http(s) image URL as the web tools read pages (public addresses only, checked again after
    every redirect, ``web_allow`` for an intranet) within the upload size limit; a refusal is a 400."""
    from foundation_models.webclient import WebError
    from foundation_models.webclient.guarded import GuardedFetcher, Limits
    from foundation_models.webclient.policy import AddressPolicy

    policy = AddressPolicy.from_allow_list(orchestrator.settings.web_allow)
    fetcher = GuardedFetcher(policy, Limits(max_bytes=orchestrator.image_limits.max_upload_bytes))

    def fetch(url: str) -> bytes:
        try:
            return fetcher.fetch(url, ("image/",)).body
        except WebError as exc:
            raise ApiError(400, f"The image at that URL cannot be used: {exc}") from exc

    return fetch


class PathDispatch:
    """ASGI middleware: requests for ``path`` (and below it) go to ``target``, the rest to the app. A mount at
    ``/`` would shadow the chat UI that ``gradio_app.py --api`` mounts there too."""

    def __init__(self, app: Any, path: str, target: Any):
        self.app, self.path, self.target = app, path, target

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        route = scope.get("path", "") if scope["type"] == "http" else ""
        if route == self.path or route.startswith(self.path + "/"):
            await self.target(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def read_body(request: Request, limit: int) -> dict[str, Any]:
    """The JSON body, read up to ``limit`` bytes (a bigger one is refused before it is all read)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"The request body is over {limit // 2**20} MB.", code="request_too_large")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"The request body is over {limit // 2**20} MB.", code="request_too_large")
    try:
        body = json.loads(data or b"null")
    except ValueError:
        raise ApiError(400, "The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


class Api:
    def __init__(self, orchestrator: Orchestrator, options: ApiOptions, personas: dict[str, Persona],
                 fetch_image: Callable[[str], bytes] | None):  # fmt: skip
        self.orchestrator = orchestrator
        self.options = options
        self.personas = personas
        self.fetch_image = fetch_image
        self.links = Links(options.image_ttl_s, options.api_key)
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- access ----------------------------------------------------------------------------------
    def authorize(self, request: Request) -> str:
        """The caller's owner id; a missing or wrong key is a 401 in OpenAI's shape."""
        key = self.options.api_key
        if key is None:
            return owner_of(None)
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError(401, "Incorrect API key provided: send it as 'Authorization: Bearer KEY'.",
                           kind="authentication_error", code="invalid_api_key")  # fmt: skip
        return owner_of(key)

    def may_see(self, request: Request, token: str, owner: str) -> bool:
        if self.options.api_key is None:
            return True
        if self.links.signed(token, request.query_params.get("sig")):
            return True
        try:
            return self.authorize(request) == owner
        except ApiError:
            return False

    def models(self) -> list[dict[str, Any]]:
        created = int(time.time())
        plain = {"id": PLAIN_MODEL, "object": "model", "created": created, "owned_by": "visual-orchestrator",
                 "description": "every loaded tool, no persona"}  # fmt: skip
        return [plain] + [{"id": p.name, "object": "model", "created": created, "owned_by": "visual-orchestrator",
                           "description": f"{p.title}: {p.description}"} for p in self.personas.values()]  # fmt: skip

    # -- a turn ----------------------------------------------------------------------------------
    async def chat(self, request: Request, owner: str, body: dict[str, Any]) -> Any:
        model = body.get("model") or PLAIN_MODEL
        if model != PLAIN_MODEL and model not in self.personas:
            known = ", ".join([PLAIN_MODEL, *self.personas])
            raise ApiError(404, f"The model '{model}' does not exist; the models are: {known}.",
                           code="model_not_found", param="model")  # fmt: skip
        fetch = self.fetch_image
        conversation = await asyncio.to_thread(read_messages, body.get("messages"), self.links, owner,
                                               self.options.max_images_per_message, fetch)  # fmt: skip
        self._enter(owner)
        try:
            session, renamed = await asyncio.to_thread(self._session, conversation, self.personas.get(model))
        except BaseException:
            self._leave(owner)
            raise
        base = (self.options.public_url or str(request.base_url)).rstrip("/")
        runner = TurnRunner(session, rename(conversation.last.text, renamed), conversation.last.images,
                            on_end=lambda: self._leave(owner))  # fmt: skip
        markdown = Markdown(lambda name: self._url(base, owner, session, name))
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.get("stream"):
            chunks = self._chunks(runner, markdown, reply_id, created, model)
            return StreamingResponse(chunks, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
        result = await asyncio.to_thread(runner.run_to_end, markdown)
        prompt_tokens = sum(estimate_tokens(m.text) for m in [*conversation.earlier, conversation.last])
        return JSONResponse({
            "id": reply_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": markdown.text.strip()},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": estimate_tokens(markdown.text),
                      "total_tokens": prompt_tokens + estimate_tokens(markdown.text)},
            "visual_orchestrator": {"images": result.images, "error": result.error},
        })  # fmt: skip

    def _session(self, conversation: Conversation, persona: Persona | None) -> tuple[Session, dict[str, str]]:
        self.links.expire()
        session_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
        session = self.orchestrator.new_session(self.orchestrator.session_root / "api" / session_id)
        self.links.track(session.folder)
        session.use_persona(_with_client_system(persona, conversation.system))
        session.language = detect_language(conversation.last.text, session.language)
        return session, prepare(session, conversation)

    def _url(self, base: str, owner: str, session: Session, name: str) -> str:
        link = self.links.add(owner, session.folder, session.images.resolve(name))
        sig = self.links.signature(link.token)
        return f"{base}/v1/images/{link.token}.png" + (f"?sig={sig}" if sig else "")

    async def _chunks(self, runner: TurnRunner, markdown: Markdown, reply_id: str, created: int,
                      model: str) -> AsyncIterator[bytes]:  # fmt: skip
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

        runner.start()
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                item = await asyncio.to_thread(runner.events.get)
                if item is TurnRunner.DONE:
                    break
                piece = markdown.piece(item) if not isinstance(item, BaseException) else _failed(item)
                if piece:
                    yield chunk({"content": piece})
            yield chunk({}, "stop")
            yield b"data: [DONE]\n\n"
        finally:  # the client went away (or the turn ended): stop the turn at its next step
            runner.stop()

    def _enter(self, owner: str) -> None:
        with self._lock:
            if self._in_flight.get(owner, 0) >= self.options.max_turns_in_flight:
                raise ApiError(429, f"{self.options.max_turns_in_flight} turns are already running for this key; "
                               "wait for one to finish.", kind="rate_limit_error", code="rate_limit_exceeded")  # fmt: skip
            self._in_flight[owner] = self._in_flight.get(owner, 0) + 1

    def _leave(self, owner: str) -> None:
        with self._lock:
            self._in_flight[owner] = max(0, self._in_flight.get(owner, 0) - 1)


class TurnRunner:
    """One session turn in a worker thread, its events in a queue. ``stop()`` ends the turn at its next step,
    in the thread that runs it (a generator can only be closed there)."""

    DONE = object()

    def __init__(self, session: Session, text: str, images: list[Any], on_end: Callable[[], None]):
        self.session, self.text, self.images, self.on_end = session, text, images, on_end
        self.events: queue.Queue[Any] = queue.Queue()
        self.stopped = threading.Event()
        self.result = None
        self._thread = threading.Thread(target=self._run, name=f"api-turn-{session.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def run_to_end(self, markdown: Markdown) -> Any:
        self._run(lambda event: markdown.piece(event))
        return self.result

    def _run(self, sink: Callable[[Event], Any] | None = None) -> None:
        put = sink or self.events.put
        turn = self.session.stream(self.text, self.images, self.session.language)
        try:
            for event in turn:
                if isinstance(event, TurnFinished):
                    self.result = event.result
                put(event)
                if self.stopped.is_set():
                    log.info("session %s: the client went away; the turn stops here", self.session.id)
                    break
        except Exception as exc:  # a bug below: logged; the client gets one sentence
            log.exception("API turn failed in session %s", self.session.id)
            put(exc)
        finally:
            turn.close()
            self.on_end()
            if sink is None:
                self.events.put(self.DONE)


def _failed(exc: BaseException) -> str:
    return f"\n\n⚠️ The turn failed ({type(exc).__name__}); see the server's log."


def _with_client_system(persona: Persona | None, system: str) -> Persona | None:
    """The persona with the client's own system messages (a NextChat mask's context) added to its instructions."""
    if not system:
        return persona
    base = persona or Persona(PLAIN_MODEL, PLAIN_MODEL, "")
    extra = f"Instructions from the chat app:\n{system}"
    return Persona(base.name, base.title, base.description, f"{base.system}\n\n{extra}".strip(), base.language,
                   base.tools, base.openers)  # fmt: skip
