"""Assembles the ASGI app: routes, middleware, lifespan. Holds no logic of its own."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcpmesh.api import Api
from mcpmesh.config import MeshConfig
from mcpmesh.front.dedicated import allocate_dedicated, dedicated_listeners
from mcpmesh.front.legacy_sse import LegacySseEndpoint
from mcpmesh.front.responses import json_response
from mcpmesh.front.security import HostOriginGuard
from mcpmesh.front.session import FrontSession, SessionStore
from mcpmesh.front.streamable_http import McpRoute, StreamableHttpEndpoint
from mcpmesh.registry.ports import PortPool
from mcpmesh.registry.sqlite import SqliteRegistry
from mcpmesh.supervisor import State, Supervisor

OnStarted = Callable[[Supervisor], Awaitable[None]]


REGISTRY_FILE = "registry.sqlite3"


class Mesh:
    """The running parts behind one app, reachable from tests and the CLI."""

    def __init__(self, config: MeshConfig):
        settings = config.mesh
        self.config = config
        self.registry = SqliteRegistry(Path(settings.state_dir) / REGISTRY_FILE)
        self.pool = PortPool(self.registry, settings.port_range, settings.host, settings.port_release_grace)
        self.store = SessionStore(settings.max_sessions, settings.session_idle_timeout)
        self.supervisor = Supervisor(config, self.store)
        self.store.on_event = self._session_event
        for name, server in self.supervisor.servers.items():
            server.record = functools.partial(self.registry.append, server=name)

    def _session_event(self, kind: str, session: FrontSession, reason: str) -> None:
        client = f"{session.client_info.get('name', '?')}/{session.client_info.get('version', '?')}"
        detail = {"session": session.id[:8], "client": client, "era": session.protocol_version}
        self.registry.append(kind, session.server, **detail, **({"reason": reason} if reason else {}))


def create_app(config: MeshConfig, on_started: OnStarted | None = None) -> Starlette:
    mesh = Mesh(config)
    settings = config.mesh

    mcp_endpoint = StreamableHttpEndpoint(mesh.supervisor, mesh.store, settings)
    sse = LegacySseEndpoint(mesh.supervisor, mesh.store, settings) if settings.legacy_sse else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dedicated = {name for name in config.servers if config.wants_dedicated_port(name)}
        for holder, port in mesh.pool.release_all_but(dedicated):
            mesh.registry.append("port_released", holder, port=port)
        sockets = allocate_dedicated(mesh.supervisor, mesh.pool, mesh.registry)
        try:
            async with (
                mesh.supervisor.run() as supervisor,
                dedicated_listeners(sockets, mcp_endpoint, sse, settings),
            ):
                if on_started is not None:
                    await on_started(supervisor)
                yield
        finally:
            mesh.registry.trim_events(settings.event_retention)
            mesh.registry.close()

    async def readyz(request: Request) -> Response:
        """200 only when every server not marked optional is healthy."""
        servers = mesh.supervisor.servers
        waiting = {n: s.state.value for n, s in servers.items() if not s.config.optional and s.state != State.HEALTHY}
        body = {"ready": not waiting, "servers": {n: s.state.value for n, s in servers.items()}}
        return json_response(body, 503 if waiting else 200)

    async def healthz(request: Request) -> Response:
        servers = {name: s.state.value for name, s in mesh.supervisor.servers.items()}
        return json_response({"status": "ok", "sessions": len(mesh.store), "servers": servers})

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/servers/{name}/mcp", mcp_endpoint),  # served by McpRoute unless mounted under a root_path
        *Api(mesh.supervisor, mesh.store, mesh.registry, mesh.pool).routes(),
    ]
    if sse is not None:
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
            ),
            Middleware(McpRoute, endpoint=mcp_endpoint),  # inside the guard: the checks still apply
        ],
        lifespan=lifespan,
    )
    app.state.mesh = mesh
    return app
