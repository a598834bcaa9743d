"""The MCP server: every tool of an Orchestrator as an MCP tool, over stdio or Streamable HTTP.

Built on the official SDK's low-level ``mcp.server.lowlevel.Server``: its ``tools/list`` handler returns each
``Tool.schema()`` as it is (the high-level ``MCPServer`` derives schemas from Python signatures instead).
One MCP connection is one ``Session``: its images, its trace. Image arguments may be an image of this
session (its name or its ``image://<session>/<file>`` URI), a ``data:`` URL or raw base64; the last two are
stored through ``Session.upload``, with the upload limits. Each new image comes back as PNG ``ImageContent``
plus a ``ResourceLink`` that ``resources/read`` serves. Tool failures are results with ``isError``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import mcp_types as types
from anyio.from_thread import run as run_from_thread
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from .errors import ImageError
from .images import NAME as IMAGE_NAME
from .tools import Progress

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .engine import Orchestrator
    from .session import Session

log = logging.getLogger(__name__)

SERVER_NAME = "visual-orchestrator"
RESOURCE_NOT_FOUND = -32002  # the MCP specification's code; the SDK has no constant for it
URI = re.compile(r"^image://(?P<session>[^/]+)/(?P<file>[0-9a-f]{8}\.png)$")
DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
INSTRUCTIONS = (
    "Image arguments take an image of this connection (its name, e.g. image/1a2b3c4d.png, or its "
    "image:// resource URI from an earlier result) or a new image as a data: URL or base64 PNG/JPEG."
)


def build_server(orchestrator: Orchestrator, session_dir: str | Path | None = None) -> Server[Any]:
    """The MCP server for ``orchestrator``; each connection gets its own Session (in ``session_dir``, kept,
    when given: stdio has one connection; otherwise a fresh folder, removed when the connection closes)."""
    sessions = _Sessions(orchestrator, session_dir)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        tools = [types.Tool(name=t.name, description=t.description, input_schema=t.schema())
                 for t in orchestrator.tools.values()]  # fmt: skip
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        session = sessions.of(ctx)
        try:
            args = _stored_images(session, params.name, params.arguments or {})
        except ImageError as exc:
            return _error(str(exc))
        report = _progress_reporter(ctx)
        call = await anyio.to_thread.run_sync(lambda: session.call_tool(params.name, args, report))
        if call.error:
            return _error(call.error)
        content: list[types.ContentBlock] = [types.TextContent(text=call.output)]
        for name in call.images:
            content += [_image_content(session, name), _link(session, name)]
        return types.CallToolResult(content=content)

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        session = sessions.of(ctx)
        return types.ListResourcesResult(resources=[_resource(session, n) for n in session.images.names()])

    async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        session, uri = sessions.of(ctx), str(params.uri)
        name = _name_of(session, uri)
        if name is None:
            raise MCPError(RESOURCE_NOT_FOUND, f"There is no image {uri} on this connection.")
        data = base64.b64encode(session.images.path(name).read_bytes()).decode()
        return types.ReadResourceResult(
            contents=[types.BlobResourceContents(uri=uri, mime_type="image/png", blob=data)]
        )

    return Server(SERVER_NAME, instructions=INSTRUCTIONS, on_list_tools=list_tools, on_call_tool=call_tool,
                  on_list_resources=list_resources, on_read_resource=read_resource)  # fmt: skip


class _Sessions:
    """One Session per MCP connection, made on its first request, kept in the connection's own state."""

    def __init__(self, orchestrator: Orchestrator, folder: str | Path | None):
        self.orchestrator, self.folder = orchestrator, folder

    def of(self, ctx: Any) -> Session:
        # mcp 2.3's ServerRequestContext has no public accessor of its Connection (the SDK's own Context does).
        connection = ctx.session._connection
        session = connection.state.get("visual-orchestrator.session")
        if session is None:
            session = self.orchestrator.new_session(self.folder)
            connection.state["visual-orchestrator.session"] = session
            if self.folder is None:
                connection.exit_stack.callback(shutil.rmtree, session.folder, True)
            log.info("MCP connection %s: session %s", connection.session_id or "stdio", session.id)
        return session


def _stored_images(session: Session, tool_name: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with each image argument given as a URI or as base64 replaced by its stored name."""
    tool = session.orchestrator.tools.get(tool_name)
    if tool is None:
        return args
    out = dict(args)
    for param in tool.params:
        value = args.get(param.name)
        if param.kind == "image" and isinstance(value, str):
            out[param.name] = _image_argument(session, param.name, value)
    return out


def _image_argument(session: Session, argument: str, value: str) -> str:
    value = value.strip()
    if value in session.images or value.startswith("image://"):
        return _name_of(session, value) or value  # an unknown URI fails as an unknown image name
    if DATA_URL.match(value):
        return _upload(session, argument, value.split(",", 1)[1])
    if len(value) > 64 and not IMAGE_NAME.fullmatch(value):
        return _upload(session, argument, value)
    return value


def _upload(session: Session, argument: str, encoded: str) -> str:
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(
            f"Argument '{argument}' is neither an image of this connection nor valid base64 image data."
        ) from None
    return session.upload(data, f"{argument}.png")


def _name_of(session: Session, value: str) -> str | None:
    """The session's image name for an image name or a URI of this session; None for anything else."""
    if value in session.images:
        return value
    match = URI.fullmatch(value)
    if match and match["session"] == session.id and f"image/{match['file']}" in session.images:
        return f"image/{match['file']}"
    return None


def _uri(session: Session, name: str) -> str:
    return f"image://{session.id}/{name.removeprefix('image/')}"


def _resource(session: Session, name: str) -> types.Resource:
    return types.Resource(uri=_uri(session, name), name=name, mime_type="image/png")


def _link(session: Session, name: str) -> types.ResourceLink:
    return types.ResourceLink(uri=_uri(session, name), name=name, mime_type="image/png")


def _image_content(session: Session, name: str) -> types.ImageContent:
    data = base64.b64encode(session.images.path(name).read_bytes()).decode()
    return types.ImageContent(data=data, mime_type="image/png")


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def _progress_reporter(ctx: Any) -> Callable[[Progress], None]:
    """Diffusion steps as progress notifications (the SDK sends none unless the client gave a progressToken);
    called from the tool's worker thread."""

    def report(progress: Progress) -> None:
        if progress.step is not None:
            run_from_thread(ctx.session.report_progress, progress.step, progress.total, progress.message)

    return report


# -- Streamable HTTP -------------------------------------------------------------------------------------


def streamable_http_app(
    orchestrator: Orchestrator, api_key: str | None = None, *, path: str = "/mcp", host: str = "127.0.0.1"
) -> ASGIApp:
    """An ASGI app serving the MCP server over Streamable HTTP at ``path``, one Session per MCP session.

    Contract for a host app (``serve`` mounts it): mount it at the root after the host's own routes
    (Starlette ``Mount("/", app)``) so it answers ``path``; run its lifespan inside the host's
    (``async with app.router.lifespan_context(app):``), which starts the SDK's session manager; a lifespan
    runs once per app, so build one app per host. With ``api_key``, every request needs
    ``Authorization: Bearer <api_key>`` (401 otherwise). ``host`` is the address served on: on 127.0.0.1
    or localhost the SDK also refuses other Host and Origin headers (DNS rebinding).
    """
    upload = orchestrator.image_limits.max_upload_bytes
    app = build_server(orchestrator).streamable_http_app(
        streamable_http_path=path, host=host, max_request_body_size=upload * 4 // 3 + 1024 * 1024
    )
    return app if api_key is None else _BearerKey(app, api_key)


class _BearerKey:
    """Refuses every HTTP request without ``Authorization: Bearer <key>``; lifespan events pass through."""

    def __init__(self, app: ASGIApp, key: str):
        self.app, self._key = app, key.encode()
        self.router = getattr(app, "router", None)  # the host runs the wrapped app's lifespan through it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
                from starlette.responses import JSONResponse

                message = "A valid API key is needed: send it as 'Authorization: Bearer <key>'."
                response = JSONResponse({"error": message}, 401, {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def serve_stdio(orchestrator: Orchestrator, session_dir: str | Path | None = None) -> None:
    """Serve one MCP connection over this process's stdin and stdout until the client closes it."""
    from mcp.server.stdio import stdio_server

    server = build_server(orchestrator, session_dir)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
