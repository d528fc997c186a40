"""How uvicorn serves every listener of the mesh (the main port and each dedicated port)."""

from __future__ import annotations

import functools
from typing import Any

from mcpmesh.front.http1.connection import Http1Protocol
from mcpmesh.front.http1.limits import ConnectionLimits

# uvicorn's server (sockets, signals, lifespan, graceful stop, proxy headers) with our HTTP/1.1
# protocol (front/http1/: why). MCP has no WebSocket transport, so no WebSocket protocol either
# ("auto" would import one at start-up, before any server is spawned). Proxy headers are read by
# the app for the routes that use the client's address (front/entry.py), not for every request.
SERVE_WITH: dict[str, Any] = {"http": Http1Protocol, "ws": "none", "proxy_headers": False}


def serve_with(limits: ConnectionLimits) -> dict[str, Any]:
    """SERVE_WITH under the mesh's connection caps and body deadline (one `limits` for every
    listener of the process, so the caps are the process's)."""
    return {**SERVE_WITH, "http": functools.partial(Http1Protocol, limits=limits)}
