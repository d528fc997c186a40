"""Assembles the ASGI app: routes, middleware, lifespan. Holds no logic of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcpmesh.config import MeshConfig
from mcpmesh.front.legacy_sse import LegacySseEndpoint
from mcpmesh.front.responses import json_response
from mcpmesh.front.security import HostOriginGuard
from mcpmesh.front.session import SessionStore
from mcpmesh.front.streamable_http import StreamableHttpEndpoint
from mcpmesh.supervisor import Supervisor

OnStarted = Callable[[Supervisor], Awaitable[None]]


class Mesh:
    """The running parts behind one app, reachable from tests and the CLI."""

    def __init__(self, config: MeshConfig):
        self.config = config
        self.store = SessionStore(config.mesh.max_sessions, config.mesh.session_idle_timeout)
        self.supervisor = Supervisor(config, self.store)


def create_app(config: MeshConfig, on_started: OnStarted | None = None) -> Starlette:
    mesh = Mesh(config)
    settings = config.mesh

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mesh.supervisor.run() as supervisor:
            if on_started is not None:
                await on_started(supervisor)
            yield

    async def healthz(request: Request) -> Response:
        servers = {name: s.state.value for name, s in mesh.supervisor.servers.items()}
        return json_response({"status": "ok", "sessions": len(mesh.store), "servers": servers})

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/servers/{name}/mcp", StreamableHttpEndpoint(mesh.supervisor, mesh.store, settings)),
    ]
    if settings.legacy_sse:
        sse = LegacySseEndpoint(mesh.supervisor, mesh.store, settings)
        routes += [
            Route("/servers/{name}/sse", sse.stream, methods=["GET"]),
            Route("/servers/{name}/messages", sse.post, methods=["POST"]),
        ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                HostOriginGuard,
                bind_host=settings.host,
                allowed_hosts=settings.allowed_hosts,
                allowed_origins=settings.allowed_origins,
            )
        ],
        lifespan=lifespan,
    )
    app.state.mesh = mesh
    return app
