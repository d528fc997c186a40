"""Dedicated ports: a server with `dedicated_port` also listens on its own port from the pool,
serving the same endpoints at /mcp (and /sse, /messages) for that one server."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import anyio
import anyio.abc
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcpmesh.config import MeshSettings
from mcpmesh.errors import PortPoolExhausted
from mcpmesh.front.entry import MeshApp
from mcpmesh.front.http1.limits import ConnectionLimits
from mcpmesh.front.legacy_sse import LegacySseEndpoint
from mcpmesh.front.security import HostOriginPolicy
from mcpmesh.front.streamable_http import StreamableHttpEndpoint
from mcpmesh.front.uvicorn_options import serve_with
from mcpmesh.registry.base import Registry
from mcpmesh.registry.ports import PortPool

LISTEN_BACKLOG = 2048
CLOSE_GRACE = 3.0  # seconds a closing listener waits for its open connections before dropping them
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
    name: str,
    mcp: StreamableHttpEndpoint,
    sse: LegacySseEndpoint | None,
    settings: MeshSettings,
    instance: str,
    limits: ConnectionLimits | None = None,
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
    return MeshApp(routes, guard, mcp, mcp_name=lambda path: name if path == "/mcp" else None, connection_limits=limits)


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


class DedicatedListeners:
    """The listener on each server's own port: opened at start-up (and by a reload that adds a
    server), closed by a reload that removes one."""

    def __init__(
        self,
        mcp: StreamableHttpEndpoint,
        sse: LegacySseEndpoint | None,
        settings: MeshSettings,
        instance: str,
        limits: ConnectionLimits,
    ):
        self.mcp, self.sse, self.settings, self.instance = mcp, sse, settings, instance
        self.limits = limits  # the main port's: the caps count every listener's connections
        self.servers: dict[str, uvicorn.Server] = {}  # by the server each one serves
        self._sockets: dict[str, socket.socket] = {}
        self._ended: dict[str, anyio.Event] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def run(self, sockets: dict[str, socket.socket]) -> AsyncIterator[DedicatedListeners]:
        """Serve each allocated socket for its server until the block ends."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for name, sock in sockets.items():
                    self.open(name, sock)
                try:
                    yield self
                finally:
                    self._tg = None
                    for running in self.servers.values():
                        running.should_exit = True
        finally:
            for sock in self._sockets.values():
                sock.close()

    def open(self, name: str, sock: socket.socket) -> None:
        """Serve `name` on this listening socket (which the listener now owns)."""
        if self._tg is None:
            sock.close()
            return
        app = dedicated_app(name, self.mcp, self.sse, self.settings, self.instance, self.limits)
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, **serve_with(self.limits))
        listener = self.servers[name] = _QuietServer(config)
        self._sockets[name] = sock
        ended = self._ended[name] = anyio.Event()

        async def serve() -> None:
            try:
                await listener.serve([sock])  # our socket: uvicorn would sys.exit on a bind failure
            finally:
                ended.set()

        self._tg.start_soon(serve)

    async def close(self, name: str) -> None:
        """Stop listening on `name`'s port (its sessions were ended first, so streams are closed)."""
        listener = self.servers.pop(name, None)
        if listener is None:
            return
        listener.should_exit = True
        with anyio.move_on_after(CLOSE_GRACE):
            await self._ended[name].wait()
        listener.force_exit = True
        await self._ended.pop(name).wait()
        self._sockets.pop(name).close()

    async def follow(self, name: str, wanted: bool, pool: PortPool, registry: Registry) -> str | None:
        """After a reload: give `name` its own port, or take it back (it then rests in the pool for
        the grace period, as any released port); why it cannot have one, if so."""
        if not wanted:
            await self.close(name)
            port = pool.release(name)
            if port is not None:
                registry.append("port_released", name, port=port)
            return None
        if name in self.servers:
            return None
        sockets, blocked = allocate_dedicated([name], self.settings.host, pool, registry)
        for held, sock in sockets.items():
            self.open(held, sock)
        return blocked.get(name)


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
