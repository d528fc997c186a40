"""The mesh's ASGI app: starlette's, with MCP requests taken the short way.

Nearly every request a mesh serves is a POST to /servers/<name>/mcp. Those pass the Host/Origin
check and go straight to the MCP endpoint: past the proxy-header rewrite (only the API reads the
client's address), starlette's error middleware, router (a regex per route) and route wrapper,
which together cost more per call than the gateway's own work on it. Everything else (the API,
the dashboard, /metrics, legacy SSE, lifespan) takes the long way. A crash on the short way is
logged and answered 500 by the HTTP protocol (front/http1/), as the error middleware would.
A connection the protocol admitted past a connection cap (front/http1/limits.py) is served only
for the operator's paths (OPERATOR_PATHS): anything else is refused 503 and the connection closed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, cast

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mcpmesh.errors import TooManyConnections
from mcpmesh.front.http1.limits import OVER_CAP, ConnectionLimits
from mcpmesh.front.responses import http_error
from mcpmesh.front.security import HostOriginPolicy, path_refusal
from mcpmesh.front.streamable_http import StreamableHttpEndpoint, mcp_route_name

# Proxies trusted to name the client (X-Forwarded-For/-Proto): uvicorn's default and its variable.
FORWARDED_ALLOW_IPS = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# What stays served on the connections kept in reserve past a cap: how an operator sees and
# steers a mesh that clients have filled (health, readiness, metrics, the control API).
OPERATOR_PATHS = ("/healthz", "/readyz", "/metrics", "/v1")


def operator_path(path: str) -> bool:
    return any(path == root or path.startswith(root + "/") for root in OPERATOR_PATHS)


class MeshApp(Starlette):
    """A starlette app whose MCP route is served before any middleware but the Host/Origin check."""

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        guard: HostOriginPolicy,
        mcp: StreamableHttpEndpoint,
        mcp_name: Callable[[str], str | None] = mcp_route_name,  # the server a path's MCP requests are for
        connection_limits: ConnectionLimits | None = None,  # where refusals past a cap are counted
        **kwargs: Any,
    ):
        super().__init__(routes=routes, **kwargs)
        self.guard = guard
        self.mcp = mcp
        self.mcp_name = mcp_name
        self.connection_limits = connection_limits
        # uvicorn types ASGI apps more narrowly than starlette does; the two agree at run time.
        proxy_headers = ProxyHeadersMiddleware(cast(Any, super().__call__), trusted_hosts=FORWARDED_ALLOW_IPS)
        self.long_way = cast(ASGIApp, proxy_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # lifespan
            return
        if "extensions" in scope and OVER_CAP in scope["extensions"] and not operator_path(scope["path"]):
            await self._refuse_over_cap(scope["extensions"][OVER_CAP]["cap"], scope, receive, send)
            return
        refusal = path_refusal(scope) or self.guard.refusal(scope)
        if refusal is not None:
            await http_error(refusal)(scope, receive, send)
            return
        name = None if scope.get("root_path") else self.mcp_name(scope["path"])
        try:
            if name is not None:
                await self.mcp.serve(name, scope, receive, send)
            else:
                await self.long_way(scope, receive, send)
        except ClientDisconnect:
            pass  # it left before its request was in: nobody to answer, and no fault of ours

    async def _refuse_over_cap(self, cap: str, scope: Scope, receive: Receive, send: Send) -> None:
        if self.connection_limits is not None:
            self.connection_limits.refused[cap] += 1
        setting = "max_connections" if cap == "connections" else "max_connections_per_client"
        refusal = TooManyConnections(
            f"Too many connections: [mesh] {setting} is reached; try again later",
            headers={"connection": "close", "retry-after": "1"},
        )
        await http_error(refusal)(scope, receive, send)
