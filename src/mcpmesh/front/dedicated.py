"""Dedicated ports: a server with `dedicated_port` also listens on its own port from the pool,
serving the same endpoints at /mcp (and /sse, /messages) for that one server."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcpmesh.config import MeshSettings
from mcpmesh.errors import PortPoolExhausted
from mcpmesh.front.entry import MeshApp
from mcpmesh.front.legacy_sse import LegacySseEndpoint
from mcpmesh.front.security import HostOriginPolicy
from mcpmesh.front.streamable_http import StreamableHttpEndpoint
from mcpmesh.front.uvicorn_options import SERVE_WITH
from mcpmesh.registry.base import Registry
from mcpmesh.registry.ports import PortPool

LISTEN_BACKLOG = 2048
log = logging.getLogger("mcpmesh.ports")


class _Named:
    """Runs an endpoint as if the request had come in on /servers/<name>/..."""

    def __init__(self, name: str, app: ASGIApp):
        self.name, self.app = name, app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["path_params"] = {**scope.get("path_params", {}), "name": self.name}
        await self.app(scope, receive, send)


def _named(name: str, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        request.scope["path_params"] = {**request.path_params, "name": name}
        return await handler(request)

    return endpoint


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the main one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def dedicated_app(
    name: str, mcp: StreamableHttpEndpoint, sse: LegacySseEndpoint | None, settings: MeshSettings, instance: str
) -> Starlette:
    async def healthz(request: Request) -> Response:
        """Who serves this port: `mcpmesh validate` checks it is the mesh whose registry assigned it."""
        return JSONResponse({"status": "ok", "mesh": instance, "server": name})

    routes = [Route("/mcp", _Named(name, mcp)), Route("/healthz", healthz, methods=["GET"])]
    if sse is not None:
        routes += [
            Route("/sse", _named(name, sse.stream), methods=["GET"]),
            Route("/messages", _named(name, sse.post), methods=["POST"]),
        ]
    guard = HostOriginPolicy.of(settings)
    return MeshApp(routes, guard, mcp, mcp_name=lambda path: name if path == "/mcp" else None)


def allocate_dedicated(
    names: Iterable[str], host: str, pool: PortPool, registry: Registry
) -> tuple[dict[str, socket.socket], dict[str, str]]:
    """Before the servers start: a listening socket for every server named that wants its own port,
    and why each server whose port cannot be had may not run (it goes to `failed`; others run)."""
    sockets: dict[str, socket.socket] = {}
    blocked: dict[str, str] = {}
    for name in names:
        try:
            port = pool.allocate(name)
            sockets[name] = listening_socket(host, port)
        except PortPoolExhausted as exc:
            blocked[name] = str(exc)
            registry.append("port_exhausted", name, reason=str(exc))
            continue
        except OSError as exc:  # taken between the bind test and now
            blocked[name] = f"dedicated port {port}: {exc.strerror or exc}"
            continue
        pool.serve(name, port)
        registry.append("port_allocated", name, port=port)
        log.info("%s: dedicated port %d", name, port)
    return sockets, blocked


@contextlib.asynccontextmanager
async def dedicated_listeners(
    sockets: dict[str, socket.socket],
    mcp: StreamableHttpEndpoint,
    sse: LegacySseEndpoint | None,
    settings: MeshSettings,
    instance: str,
) -> AsyncIterator[dict[str, uvicorn.Server]]:
    """Serve each allocated socket for its server until the block ends; yields the listeners by server."""
    servers: dict[str, uvicorn.Server] = {}
    try:
        async with anyio.create_task_group() as tg:
            for name, sock in sockets.items():
                app = dedicated_app(name, mcp, sse, settings, instance)
                config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, **SERVE_WITH)
                listener = servers[name] = _QuietServer(config)
                tg.start_soon(listener.serve, [sock])  # our socket: uvicorn would sys.exit on a bind failure
            try:
                yield servers
            finally:
                for running in servers.values():
                    running.should_exit = True
    finally:
        for sock in sockets.values():
            sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening (OSError when the port is not to be had)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock
