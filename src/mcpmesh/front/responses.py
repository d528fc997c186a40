"""The HTTP responses the front sends: JSON-RPC bodies, errors, and SSE streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from mcpmesh.errors import HttpError, JsonRpcError
from mcpmesh.jsonrpc import error

SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # let reverse proxies stream events as they come
    "Connection": "keep-alive",
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def http_error(exc: HttpError) -> Response:
    """An HTTP-level refusal with an id-less JSON-RPC error body."""
    return json_response(error(None, exc.code, str(exc)), exc.status, exc.headers)


def rpc_error(exc: JsonRpcError, request_id: Any = None) -> Response:
    return json_response(error(request_id, exc.code, exc.message, exc.data), exc.status)


def accepted() -> Response:
    return Response(status_code=202)


def sse_response(events: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})


def sse_event(msg: Any) -> bytes:
    return b"event: message\ndata: " + orjson.dumps(msg) + b"\n\n"


SSE_KEEPALIVE = b": keep-alive\n\n"
