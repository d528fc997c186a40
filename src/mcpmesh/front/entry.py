"""The mesh's ASGI app: starlette's, with MCP requests taken the short way.

Nearly every request a mesh serves is a POST to /servers/<name>/mcp. Those pass the Host/Origin
check and go straight to the MCP endpoint: past the proxy-header rewrite (only the API reads the
client's address), starlette's error middleware, router (a regex per route) and route wrapper,
which together cost more per call than the gateway's own work on it. Everything else (the API,
the dashboard, /metrics, legacy SSE, lifespan) takes the long way. A crash on the short way is
logged and answered 500 by the HTTP protocol (front/http1.py), as the error middleware would.
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

from mcpmesh.front.responses import http_error
from mcpmesh.front.security import HostOriginPolicy, path_refusal
from mcpmesh.front.streamable_http import StreamableHttpEndpoint, mcp_route_name

# Proxies trusted to name the client (X-Forwarded-For/-Proto): uvicorn's default and its variable.
FORWARDED_ALLOW_IPS = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


class MeshApp(Starlette):
    """A starlette app whose MCP route is served before any middleware but the Host/Origin check."""

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        guard: HostOriginPolicy,
        mcp: StreamableHttpEndpoint,
        mcp_name: Callable[[str], str | None] = mcp_route_name,  # the server a path's MCP requests are for
        **kwargs: Any,
    ):
        super().__init__(routes=routes, **kwargs)
        self.guard = guard
        self.mcp = mcp
        self.mcp_name = mcp_name
        # uvicorn types ASGI apps more narrowly than starlette does; the two agree at run time.
        proxy_headers = ProxyHeadersMiddleware(cast(Any, super().__call__), trusted_hosts=FORWARDED_ALLOW_IPS)
        self.long_way = cast(ASGIApp, proxy_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # lifespan
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
