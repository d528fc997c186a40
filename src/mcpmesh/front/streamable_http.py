"""MCP Streamable HTTP at /servers/<name>/mcp: sessions for 2025-03-26 ... 2025-11-25 clients here;
2026-07-28 requests (chosen per request by MCP-Protocol-Version) go to the stateless handler."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from mcpmesh.config import MeshSettings
from mcpmesh.errors import (
    HttpError,
    InternalError,
    InvalidRequest,
    JsonRpcError,
    MethodNotAllowed,
    NotAcceptable,
    SessionRequired,
)
from mcpmesh.front.first_reply import FirstReplyWait
from mcpmesh.front.request import RawRequest
from mcpmesh.front.responses import (
    accepted,
    http_error,
    json_response,
    lone_response,
    rpc_error,
    sse_events,
    sse_response,
)
from mcpmesh.front.security import accepts, check_post_headers, read_capped_body
from mcpmesh.front.served import ServedServer, Servers
from mcpmesh.front.stateless import StatelessEndpoint
from mcpmesh.jsonrpc import Message, check_message, error, parse
from mcpmesh.protocol.versions import LEGACY_VERSIONS
from mcpmesh.router.session import Call, ClientSession, SessionStore

SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
ENDED_WITHOUT_REPLY = InternalError.code


class StreamableHttpEndpoint:
    """One ASGI endpoint for every server's /mcp route; per-request work is POST/GET/DELETE."""

    def __init__(self, servers: Servers, store: SessionStore, settings: MeshSettings):
        self.servers = servers
        self.store = store
        self.settings = settings
        self.stateless = StatelessEndpoint(settings)
        self.first_reply = FirstReplyWait(settings.keepalive_interval)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As a starlette route (dedicated ports): the server's name is a path parameter."""
        await self.serve(scope["path_params"]["name"], scope, receive, send)

    async def serve(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        request = RawRequest(scope, receive)
        try:
            server = self.servers.get(name)
            version = request.headers.get(VERSION_HEADER)
            if server is None:
                response = json_response(error(None, InvalidRequest.code, "Not Found: no such server"), 404)
            elif version is not None and version not in LEGACY_VERSIONS:
                response = await self._stateless(Request(scope, receive), server)  # 2026-07-28 (or newer): no session
            elif request.method == "POST":
                response = await self._post(request, server)
            elif request.method == "GET":
                response = self._get(request, server)
            elif request.method == "DELETE":
                response = self._delete(request, server)
            else:
                raise MethodNotAllowed("Method Not Allowed", {"Allow": "GET, POST, DELETE"})
        except HttpError as exc:
            response = http_error(exc)
        except JsonRpcError as exc:
            response = rpc_error(exc)
        await response(scope, receive, send)

    async def _stateless(self, request: Request, server: ServedServer) -> Response:
        if self.settings.stateless_requests:
            return await self.stateless.handle(request, server)
        # No 2026 error body: a dual-era client falls back to the initialize handshake.
        refusal = error(None, InvalidRequest.code, "Bad Request: this mesh serves handshake-era sessions only")
        return json_response(refusal, 400)

    # -- POST --------------------------------------------------------------------------------
    async def _post(self, request: RawRequest, server: ServedServer) -> Response:
        check_post_headers(request)
        body = parse(await read_capped_body(request, self.settings.max_body_bytes))
        if isinstance(body, list):
            return await self._batch(request, server, body)
        msg = check_message(body)
        try:
            return await self._handle(request, server, msg)
        except JsonRpcError as exc:  # a request's error is its answer: with its id, or the client waits on
            if "method" not in msg or "id" not in msg:
                raise
            return rpc_error(exc, msg["id"])

    async def _handle(self, request: RawRequest, server: ServedServer, msg: Message) -> Response:
        if msg.get("method") == "initialize" and "id" in msg:
            return await self._initialize(server, msg)
        session = self._session(request, server)
        if "method" not in msg:
            await session.mux.handle_response(session, msg)
            return accepted()
        if "id" not in msg:
            await session.mux.handle_notification(session, msg)
            return accepted()
        return await self._reply(await session.mux.handle_request(session, msg))

    async def _initialize(self, server: ServedServer, msg: Message) -> Response:
        session, reply = await server.open_session(msg)
        if isinstance(reply, Call):
            reply = await _final_response(reply)
            if "error" in reply:
                self.store.close(session, "initialize refused by the server")
                return json_response(reply)
        return json_response(reply, headers={SESSION_HEADER: session.id})

    async def _reply(self, reply: Call | Message) -> Response:
        """JSON when the response comes first; SSE when anything else comes before it."""
        if isinstance(reply, dict):
            return json_response(reply)
        outbox = reply.outbox
        first: Message | None = None
        try:
            first = await self.first_reply.first(outbox)
        except TimeoutError:
            pass  # nothing yet: stream what comes, with keep-alives
        else:
            if first is None:  # the stream ended without a response (session closed under it)
                return json_response(error(reply.client_id, ENDED_WITHOUT_REPLY, "request ended without a response"))
            if lone_response(first, outbox):
                return json_response(first)
        return sse_response(sse_events(outbox, first, self.settings.keepalive_interval))

    async def _batch(self, request: RawRequest, server: ServedServer, items: list[Any]) -> Response:
        """JSON-RPC batches, accepted only on sessions that negotiated 2025-03-26."""
        session = self._session(request, server)
        if session.protocol_version != "2025-03-26":
            raise InvalidRequest("Invalid Request: batches are only accepted on 2025-03-26 sessions")
        if not items:
            raise InvalidRequest("Invalid Request: empty batch")
        replies: list[Call | Message] = []
        for item in items:
            try:
                msg = check_message(item)
            except JsonRpcError as exc:
                replies.append(error(None, exc.code, exc.message))
                continue
            if "method" not in msg:
                await session.mux.handle_response(session, msg)
            elif "id" not in msg:
                await session.mux.handle_notification(session, msg)
            else:
                replies.append(await session.mux.handle_request(session, msg))
        if not replies:
            return accepted()
        return json_response([r if isinstance(r, dict) else await _final_response(r) for r in replies])

    # -- GET / DELETE ------------------------------------------------------------------------
    def _get(self, request: RawRequest, server: ServedServer) -> Response:
        if not accepts(request, "text/event-stream"):
            raise NotAcceptable("Not Acceptable: Accept must list text/event-stream")
        session = self._session(request, server)
        outbox = session.open_stream()
        close = lambda: session.close_stream(outbox)  # noqa: E731  # a named one-liner reads best here
        return sse_response(sse_events(outbox, None, self.settings.keepalive_interval, on_close=close))

    def _delete(self, request: RawRequest, server: ServedServer) -> Response:
        session = self._session(request, server)
        self.store.close(session, "deleted by the client")
        return Response(status_code=200)

    # -- helpers -----------------------------------------------------------------------------
    def _session(self, request: RawRequest, server: ServedServer) -> ClientSession:
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            raise SessionRequired("Bad Request: Mcp-Session-Id header is required")
        session = self.store.get(session_id, server.name)
        session.touch()
        return session


async def _final_response(call: Call) -> Message:
    """Wait for a call's response, skipping what comes before it."""
    last: Message | None = None
    while (msg := await call.outbox.get()) is not None:
        last = msg
    if last is None or "method" in last:
        return error(call.client_id, ENDED_WITHOUT_REPLY, "request ended without a response")
    return last


def mcp_route_name(path: str) -> str | None:
    """The server name in /servers/<name>/mcp, matched as starlette's `{name}` would be ([^/]+);
    None for any other path. MCP requests take the short way on it (front/entry.py)."""
    if path.startswith("/servers/") and path.endswith("/mcp"):
        name = path[len("/servers/") : -len("/mcp")]
        if name and "/" not in name:
            return name
    return None
