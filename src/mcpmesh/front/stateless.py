"""2026-07-28 requests on /servers/<name>/mcp: stateless, POST only, each one self-describing."""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mcpmesh.config import MeshSettings
from mcpmesh.errors import InvalidParams, InvalidRequest, JsonRpcError, MethodNotAllowed
from mcpmesh.front.responses import (
    accepted,
    first_or_disconnect,
    json_response,
    lone_response,
    sse_events,
    sse_response,
)
from mcpmesh.front.security import check_post_headers, read_capped_body
from mcpmesh.front.served import ServedServer
from mcpmesh.jsonrpc import Message, check_message, error, params_of, parse, result
from mcpmesh.protocol.envelope import META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL, META_SUBSCRIPTION_ID
from mcpmesh.protocol.log_levels import LOG_LEVELS
from mcpmesh.protocol.requests import status_for, validate_param_headers, validate_request
from mcpmesh.protocol.results import discover_result
from mcpmesh.protocol.versions import MODERN_VERSION
from mcpmesh.router.multiplexer import Multiplexer
from mcpmesh.router.session import Call, ClientSession
from mcpmesh.router.subscriptions import Listener

CLOSED_BY_CLIENT = "the client closed the response stream"


class StatelessEndpoint:
    """Serves one 2026-07-28 request at a time: no session is minted or honoured."""

    def __init__(self, settings: MeshSettings):
        self.settings = settings

    async def handle(self, request: Request, server: ServedServer) -> Response:
        if request.method != "POST":
            raise MethodNotAllowed("Method Not Allowed: 2026-07-28 requests are POST only", {"Allow": "POST"})
        check_post_headers(request)
        body = parse(await read_capped_body(request, self.settings.max_body_bytes))
        if not isinstance(body, dict):
            raise InvalidRequest("Invalid Request: 2026-07-28 takes a single JSON-RPC object, not a batch")
        msg = check_message(body)
        if "method" not in msg:
            raise InvalidRequest("Invalid Request: a 2026-07-28 client does not send responses")
        if "id" not in msg:
            return accepted()  # 2026-07-28 defines no client notifications over HTTP: acknowledged, not sent on
        try:
            validate_request(msg, request.headers, request.scope["headers"])
        except JsonRpcError as exc:
            return _refused(msg, exc)
        meta: dict[str, Any] = params_of(msg)["_meta"]
        info = meta.get(META_CLIENT_INFO)
        state = params_of(msg).get("requestState")
        mux: Multiplexer | None = None
        try:
            # A shared server's one router, or (sharing = "session") a process of the request's own,
            # or the one holding the call a retry resumes.
            mux = await server.router_for_request(
                meta[META_CLIENT_CAPABILITIES],
                info if isinstance(info, dict) else {},
                state if isinstance(state, str) else None,
            )
            if msg["method"] == "tools/call":
                declared = mux.tool_params.get(params_of(msg).get("name"))  # type: ignore[arg-type]
                validate_param_headers(msg, request.headers, declared)
            return await self._dispatch(request, mux, msg)
        except JsonRpcError as exc:  # e.g. the server is restarting: answered with the request's id
            return _refused(msg, exc)
        finally:
            if mux is not None and not mux.calls and mux.on_idle is not None:
                mux.on_idle()  # answered here (discover, an error): nothing will end a call later

    async def _dispatch(self, request: Request, mux: Multiplexer, msg: Message) -> Response:
        if msg["method"] == "server/discover":
            upstream = await mux.ready_upstream()
            info = discover_result(
                mux.advertised_capabilities(), upstream.server_info, upstream.server_result.get("instructions")
            )
            return json_response(result(msg["id"], info))
        if msg["method"] == "subscriptions/listen":
            return await self._listen(mux, msg)
        reply = await mux.handle_request(_caller(mux.server, msg, request, mux), msg)
        if isinstance(reply, dict):
            return _json(reply)
        return await self._stream(request, mux, reply)

    async def _listen(self, mux: Multiplexer, msg: Message) -> Response:
        """A long-lived SSE stream: the acknowledgement first, then only the requested notifications."""
        wanted = params_of(msg).get("notifications")
        if not isinstance(wanted, dict):
            return _json(error(msg["id"], InvalidParams.code, "Invalid params: params.notifications must be an object"))
        listener = Listener(msg["id"])
        honoured = await mux.listen(listener, wanted)
        ack = {
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": honoured, "_meta": {META_SUBSCRIPTION_ID: msg["id"]}},
        }
        events = sse_events(
            listener.outbox, ack, self.settings.keepalive_interval, on_close=lambda: mux.unlisten(listener)
        )
        return sse_response(events)

    async def _stream(self, request: Request, mux: Multiplexer, call: Call) -> Response:
        """JSON when the response comes first, else SSE; closing either cancels the request."""
        first, gone = await first_or_disconnect(call.outbox, request.receive, self.settings.keepalive_interval)
        if gone:
            mux.cancel(call, CLOSED_BY_CLIENT)
            return Response(status_code=204)  # nobody is listening any more
        if first is not None and lone_response(first, call.outbox):
            return _json(first)
        return sse_response(
            sse_events(
                call.outbox,
                first,
                self.settings.keepalive_interval,
                on_abandon=lambda: mux.cancel(call, CLOSED_BY_CLIENT),
            )
        )


def _caller(server: str, msg: Message, request: Request, mux: Multiplexer) -> ClientSession:
    """A stand-in session for one stateless request, built from its `_meta` envelope."""
    meta: dict[str, Any] = params_of(msg)["_meta"]
    info = meta.get(META_CLIENT_INFO)
    level = meta.get(META_LOG_LEVEL)
    return ClientSession(
        principal=_principal(request, info),
        id="",
        server=server,
        protocol_version=MODERN_VERSION,
        capabilities=meta[META_CLIENT_CAPABILITIES],
        client_info=info if isinstance(info, dict) else {},
        mux=mux,
        log_level=level if level in LOG_LEVELS else None,
        modern=True,
    )


def _principal(request: Request, client_info: Any) -> str:
    """Who is calling, as far as the gateway can tell without its own auth: the credential the
    client presented (hashed; never stored) and the client's name. A requestState is bound to it."""
    credential = hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()[:32]
    name = client_info.get("name") if isinstance(client_info, dict) else None
    return f"{credential}:{name if isinstance(name, str) else ''}"


def _json(reply: Message) -> Response:
    err = reply.get("error")
    return json_response(reply, status_for(err["code"]) if isinstance(err, dict) else 200)


def _refused(msg: Message, exc: JsonRpcError) -> Response:
    return json_response(error(msg["id"], exc.code, exc.message, exc.data), status_for(exc.code))
