"""The 2024-11-05 HTTP+SSE transport: GET /servers/<name>/sse opens the one stream of a connection,
whose `endpoint` event names an unguessable POST URI; every reply travels on that stream."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from mcpmesh.config import MeshSettings
from mcpmesh.errors import (
    HttpError,
    InvalidRequest,
    JsonRpcError,
    NotAcceptable,
    SessionNotFound,
    TooManySessions,
    UnsupportedMedia,
)
from mcpmesh.front.responses import accepted, http_error, json_response, rpc_error, sse_events, sse_response
from mcpmesh.front.security import read_capped_body
from mcpmesh.front.served import ServedServer, Servers
from mcpmesh.jsonrpc import Message, check_message, error, parse
from mcpmesh.router.outbox import Outbox
from mcpmesh.router.session import ClientSession, SessionStore

UNINITIALIZED_TIMEOUT = 30.0  # seconds a stream may stay open without its client sending initialize


class Connection:
    """One GET /sse stream: its outbox, and the session its `initialize` opened."""

    def __init__(self, server: str) -> None:
        self.id = secrets.token_urlsafe(24)
        self.server = server
        self.outbox = Outbox()
        self.session: ClientSession | None = None
        self.initializing = False  # its initialize is being answered (a process may be starting)


class LegacySseEndpoint:
    def __init__(self, servers: Servers, store: SessionStore, settings: MeshSettings):
        self.servers = servers
        self.store = store
        self.settings = settings
        self.connections: dict[str, Connection] = {}

    async def stream(self, request: Request) -> Response:
        try:
            server = self._server(request)
            accept = request.headers.get("accept", "*/*")
            if "text/event-stream" not in accept and "*/*" not in accept:
                raise NotAcceptable("Not Acceptable: Accept must list text/event-stream")
            if len(self.connections) >= self.settings.max_sessions:
                raise TooManySessions(f"Too many open connections (limit {self.settings.max_sessions})")
        except HttpError as exc:
            return http_error(exc)
        conn = Connection(server.name)
        self.connections[conn.id] = conn
        # Streams count against max_sessions: one that never initializes must not hold a place forever.
        asyncio.get_running_loop().call_later(UNINITIALIZED_TIMEOUT, self._end_if_uninitialized, conn)
        # The POST URI sits beside this stream's own path (/servers/<name>/sse, or /sse on a dedicated port).
        base = request.scope.get("root_path", "") + request.url.path.removesuffix("/sse")
        endpoint = f"{base}/messages?session_id={conn.id}"
        return sse_response(self._events(conn, endpoint))

    def _end_if_uninitialized(self, conn: Connection) -> None:
        if conn.session is None and not conn.initializing and self.connections.get(conn.id) is conn:
            conn.outbox.finish()  # the stream ends; its close() forgets the connection

    async def _events(self, conn: Connection, endpoint: str) -> AsyncIterator[bytes]:
        def close() -> None:
            self.connections.pop(conn.id, None)
            if conn.session is not None:
                self.store.close(conn.session, "SSE stream closed")

        yield f"event: endpoint\ndata: {endpoint}\n\n".encode()
        async for chunk in sse_events(conn.outbox, None, self.settings.keepalive_interval, on_close=close):
            yield chunk

    async def post(self, request: Request) -> Response:
        try:
            return await self._post(request)
        except HttpError as exc:
            return http_error(exc)
        except JsonRpcError as exc:
            return rpc_error(exc)

    async def _post(self, request: Request) -> Response:
        server = self._server(request)
        conn_id = request.query_params.get("session_id")
        if not conn_id:
            raise InvalidRequest("Bad Request: session_id is required")
        conn = self.connections.get(conn_id)
        if conn is None or conn.server != server.name:
            raise SessionNotFound("Not Found: no such SSE connection")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise UnsupportedMedia("Unsupported Media Type: Content-Type must be application/json")
        msg = check_message(parse(await read_capped_body(request, self.settings.max_body_bytes)))
        try:
            return await self._handle(server, conn, msg)
        except JsonRpcError as exc:  # a request's error is its answer, on the stream
            if "id" not in msg or "method" not in msg:
                raise
            conn.outbox.push(error(msg["id"], exc.code, exc.message, exc.data))
            return accepted()

    async def _handle(self, server: ServedServer, conn: Connection, msg: Message) -> Response:
        if msg.get("method") == "initialize" and "id" in msg:
            if conn.session is not None:
                conn.outbox.push(error(msg["id"], InvalidRequest.code, "Invalid Request: already initialized"))
                return accepted()
            conn.initializing = True
            try:
                conn.session, reply = await server.open_session(msg, relay_to=conn.outbox)
            finally:
                conn.initializing = False
            if isinstance(reply, dict):
                conn.outbox.push(reply)
            return accepted()
        session = conn.session
        if session is None or session.closed:
            return json_response(error(msg.get("id"), InvalidRequest.code, "Bad Request: initialize first"), 400)
        session.touch()
        if "method" not in msg:
            await session.mux.handle_response(session, msg)
        elif "id" not in msg:
            await session.mux.handle_notification(session, msg)
        else:
            reply = await session.mux.handle_request(session, msg)
            if isinstance(reply, dict):
                conn.outbox.push(reply)
        return accepted()

    def _server(self, request: Request) -> ServedServer:
        server = self.servers.get(request.path_params["name"])
        if server is None:
            raise SessionNotFound("Not Found: no such server")
        return server
