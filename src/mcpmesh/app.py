"""Assembles the ASGI app: routes, middleware, lifespan. Holds no logic of its own."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcpmesh.api.routes import Api
from mcpmesh.config import MeshConfig
from mcpmesh.dashboard import Dashboard
from mcpmesh.front.dedicated import DedicatedListeners, allocate_dedicated
from mcpmesh.front.entry import MeshApp
from mcpmesh.front.http1.limits import ConnectionLimits
from mcpmesh.front.legacy_sse import LegacySseEndpoint
from mcpmesh.front.responses import json_response
from mcpmesh.front.security import HostOriginPolicy
from mcpmesh.front.streamable_http import StreamableHttpEndpoint
from mcpmesh.observe.audit import ToolCallAudit
from mcpmesh.observe.metrics import MeshMetrics
from mcpmesh.observe.redact import Redactor, secrets_of
from mcpmesh.observe.stats import TrafficStats
from mcpmesh.registry.base import Listing
from mcpmesh.registry.ports import PortPool
from mcpmesh.registry.resilient import ResilientRegistry
from mcpmesh.registry.sqlite import SqliteRegistry
from mcpmesh.router.catalog import difference
from mcpmesh.router.session import ClientSession, SessionStore
from mcpmesh.supervision.orphans import ProcessLedger, sweep
from mcpmesh.supervision.reload import Reloader
from mcpmesh.supervision.server import Reporting, State
from mcpmesh.supervision.supervisor import Supervisor

OnStarted = Callable[[Supervisor], Awaitable[None]]
LoadConfig = Callable[[], MeshConfig]


REGISTRY_FILE = "registry.sqlite3"


class Mesh:
    """The running parts behind one app, reachable from tests and the CLI."""

    def __init__(self, config: MeshConfig):
        settings = config.mesh
        self.config = config
        # Raises RegistryUnusable (a corrupt or unwritable file) at once; later failures degrade.
        self.registry = ResilientRegistry(SqliteRegistry(Path(settings.state_dir) / REGISTRY_FILE))
        self.pool = PortPool(self.registry, settings.port_range, settings.host, settings.port_release_grace)
        self.redact = Redactor.from_config(config)
        self.metrics = MeshMetrics(config.servers)
        # Every listener's connections, counted against [mesh]'s caps (front/http1/limits.py).
        self.connections = ConnectionLimits(
            settings.max_connections, settings.max_connections_per_client, settings.body_timeout
        )
        self.audit = ToolCallAudit(self.registry, settings.event_retention)
        self.stats = TrafficStats(config.servers)
        self.store = SessionStore(
            settings.max_sessions,
            settings.session_idle_timeout,
            on_event=self._session_event,
            idle_timeout_of=self._idle_timeout_of,
            shortest_idle_timeout=settings.session_process_idle_timeout,
        )
        self.ledger = ProcessLedger(Path(settings.state_dir))
        reporting = Reporting(
            events=self.registry.append,
            save_listing=self._save_listing,
            redact=self.redact,
            observers=(self.metrics, self.audit, self.stats),
            ledger=self.ledger,
        )
        self.supervisor = Supervisor(config, self.store, reporting)
        self.metrics.watch(self.supervisor, self.store, self.pool, self.registry.health, self.connections)
        self.instance = secrets.token_hex(6)  # tells this mesh from another one answering on a port
        self.dedicated: dict[str, uvicorn.Server] = {}  # the listener on each server's own port
        self.reloader: Reloader | None = None  # when the mesh was started from a file it can read again

    def _idle_timeout_of(self, server: str) -> float:
        """A session-mode session holds a process of its own: it ends sooner when idle. (The server
        as it runs now: a reload may have changed its sharing.)"""
        settings, own = self.config.mesh, self.supervisor.servers.get(server)
        if own is not None and own.config.sharing == "session":
            return min(settings.session_idle_timeout, settings.session_process_idle_timeout)
        return settings.session_idle_timeout

    def _save_listing(self, server: str, listing: Listing) -> None:
        """Keep a list whose content differs from what the registry holds, and say what changed."""
        before = self.registry.listings(server).get(listing.kind)
        if before is not None and before.hash == listing.hash:
            return  # the same content as last time (e.g. before the mesh restarted): keep when it was first seen
        self.registry.put_listing(server, listing)
        self.registry.append("catalog_changed", server, **difference(before, listing))

    async def reap_orphans(self) -> None:
        """Before any server starts: end what a mesh on this state_dir, killed with -9, left running."""
        for leftover in await sweep(Path(self.config.mesh.state_dir), self.redact):
            self.registry.append("orphan_reaped", leftover.server, pid=leftover.pid, command=leftover.command)

    def _session_event(self, kind: str, session: ClientSession, reason: str) -> None:
        self.metrics.session_event(kind, session, reason)
        detail = {"session": session.id[:8], "client": session.client, "era": session.protocol_version}
        self.registry.append(kind, session.server, **detail, **({"reason": reason} if reason else {}))


def create_app(
    config: MeshConfig, on_started: OnStarted | None = None, reload_from: LoadConfig | None = None
) -> Starlette:
    """The mesh's app; with `reload_from` (what reads the config file again), it can be reloaded."""
    mesh = Mesh(config)
    settings = config.mesh

    mcp_endpoint = StreamableHttpEndpoint(mesh.supervisor.servers, mesh.store, settings)
    sse = LegacySseEndpoint(mesh.supervisor.servers, mesh.store, settings) if settings.legacy_sse else None
    listeners = DedicatedListeners(mcp_endpoint, sse, settings, mesh.instance, mesh.connections)
    mesh.dedicated = listeners.servers
    if reload_from is not None:
        load = reload_from

        def reread() -> MeshConfig:
            config = load()
            mesh.redact.include(secrets_of(config))  # before anything of its servers can be logged
            return config

        mesh.reloader = Reloader(
            mesh.supervisor,
            reread,
            mesh.registry.append,
            lambda name, wanted: listeners.follow(name, wanted, mesh.pool, mesh.registry),
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await mesh.reap_orphans()
        dedicated = {name for name in config.servers if config.wants_dedicated_port(name)}
        for holder, port in mesh.pool.release_all_but(dedicated):
            mesh.registry.append("port_released", holder, port=port)
        wanted = [name for name in config.servers if name in dedicated]  # in config order, as ports are handed out
        sockets, blocked = allocate_dedicated(wanted, settings.host, mesh.pool, mesh.registry)
        try:
            async with (
                mesh.audit.run(),  # entered first, left last: it writes the calls the stop ended
                mesh.supervisor.run(blocked) as supervisor,
                listeners.run(sockets),
            ):
                if on_started is not None:
                    await on_started(supervisor)
                try:
                    yield
                finally:  # a reload from now on would start servers the stop is ending
                    if mesh.reloader is not None:
                        mesh.reloader.close()
        finally:
            mesh.ledger.close()  # every process was stopped: none is left for the next start to reap
            mesh.registry.trim_events(settings.event_retention)
            mesh.registry.close()

    async def readyz(request: Request) -> Response:
        """200 only when every enabled server not marked optional is healthy and the registry keeps up."""
        servers = mesh.supervisor.servers
        awaited = {n: s for n, s in servers.items() if s.config.enabled and not s.config.optional}
        waiting = {n: s.state.value for n, s in awaited.items() if s.state != State.HEALTHY}
        registry = mesh.registry.health()
        ready = not waiting and not registry.degraded
        body = {"ready": ready, "servers": {n: s.state.value for n, s in servers.items()}, "registry": registry.reason}
        return json_response(body, 200 if ready else 503)

    async def healthz(request: Request) -> Response:
        """200 while the process serves, whatever its servers and registry go through."""
        servers = {name: s.state.value for name, s in mesh.supervisor.servers.items()}
        registry = "degraded" if mesh.registry.health().degraded else "ok"
        body = {"status": "ok", "mesh": mesh.instance, "sessions": len(mesh.store), "servers": servers}
        return json_response({**body, "registry": registry})

    guard = HostOriginPolicy.of(settings)
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", mesh.metrics.endpoint, methods=["GET"]),
        Route("/servers/{name}/mcp", mcp_endpoint),  # taken the short way (MeshApp) unless mounted under a root_path
        *Api(
            mesh.supervisor,
            mesh.store,
            mesh.registry,
            mesh.pool,
            mesh.stats,
            guard,
            reloader=mesh.reloader,
            registry_health=mesh.registry.health,
        ).routes(),
        *Dashboard().routes(),
    ]
    if sse is not None:
        routes += [
            Route("/servers/{name}/sse", sse.stream, methods=["GET"]),
            Route("/servers/{name}/messages", sse.post, methods=["POST"]),
        ]
    app = MeshApp(routes, guard, mcp_endpoint, lifespan=lifespan, connection_limits=mesh.connections)
    app.state.mesh = mesh
    return app
