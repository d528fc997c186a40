"""Desired vs actual servers: every configured server started, stopped and restarted on request,
and the session store's expiry loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
import anyio.abc

from mcpmesh.config import MeshConfig, ServerConfig
from mcpmesh.errors import ServerBlocked
from mcpmesh.router.session import SessionStore
from mcpmesh.supervision.per_session import PerSessionServer
from mcpmesh.supervision.server import Reporting, ServerBase, State
from mcpmesh.supervision.shared import SharedServer

DISABLED_REASON = "disabled in the config (enabled = false)"


class Supervisor:
    """Owns every configured server and the session store's expiry loop."""

    def __init__(self, config: MeshConfig, store: SessionStore, reporting: Reporting):
        self.config = config
        self.store = store
        self.reporting = reporting
        self.servers: dict[str, ServerBase] = {name: self._build(name, cfg) for name, cfg in config.servers.items()}
        self.blocked: dict[str, str] = {}  # servers that may not run, and why (e.g. no dedicated port)
        self._tg: anyio.abc.TaskGroup | None = None
        self._control = anyio.Lock()  # one start/stop/restart at a time

    @asynccontextmanager
    async def run(self, blocked: Mapping[str, str] | None = None) -> AsyncIterator[Supervisor]:
        """Run every server but the `blocked` ones (name: why it may not run) until the block ends."""
        self.blocked = dict(blocked or {})
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for server in self.servers.values():
                if server.name in self.blocked:  # e.g. its dedicated port could not be had
                    server.set_state(State.FAILED, self.blocked[server.name])
                elif not server.config.enabled:  # switched off in the config: never spawned
                    server.set_state(State.STOPPED, DISABLED_REASON)
                else:
                    await tg.start(server.supervise)
            tg.start_soon(self.store.expire_idle)
            try:
                yield self
            finally:
                self._tg = None
                self.end_client_streams("mesh stopping")
                tg.cancel_scope.cancel()

    def _build(self, name: str, cfg: ServerConfig) -> ServerBase:
        kind = SharedServer if cfg.sharing == "shared" else PerSessionServer
        return kind(name, cfg, self.store, self.reporting)

    # -- operator control (the /v1 API and `mcpmesh restart`) -----------------------------------
    async def stop_server(self, server: ServerBase, why: str) -> bool:
        """Stop it and keep it stopped; its sessions end. False if it was not running."""
        async with self._control:
            if not server.running:
                return False
            server.record("stop_requested", by=why)
            await self._stop(server, f"stopped by {why}", end_sessions=True)
            return True

    async def start_server(self, server: ServerBase, why: str) -> bool:
        """Start a stopped (or failed) server afresh. False if it was already running."""
        async with self._control:
            if server.running:
                return False
            server.record("start_requested", by=why)
            await self._start(server)
            return True

    async def restart_server(self, server: ServerBase, why: str) -> None:
        """Stop and start it again with a fresh restart budget. A shared server's sessions stay
        (their next requests wait for the new process); a session-mode server's end with theirs."""
        async with self._control:
            server.record("restart_requested", by=why)
            if server.running:
                await self._stop(server, f"restart requested by {why}", end_sessions=not server.restart_keeps_sessions)
            server.restarts += 1
            server.restart_reasons["requested"] += 1
            await self._start(server)

    # -- reload (reload.py decides what changed) ------------------------------------------------
    async def retire(self, name: str, why: str) -> None:
        """Stop a server for good and forget it: its sessions end, its URLs answer 404."""
        async with self._control:
            server = self.servers[name]
            await self._stop(server, f"removed by {why}", end_sessions=True)
            del self.servers[name]
            self.blocked.pop(name, None)

    async def enlist(self, name: str, cfg: ServerConfig, blocked: str | None = None) -> ServerBase:
        """Add a server and start it, or mark it failed with `blocked`, the reason it may not run."""
        async with self._control:
            server = self.servers[name] = self._build(name, cfg)
            if blocked is not None:
                self.blocked[name] = blocked
                server.set_state(State.FAILED, blocked)
            else:
                await self._start(server)
            return server

    async def _stop(self, server: ServerBase, reason: str, *, end_sessions: bool) -> None:
        if end_sessions:
            server.end_sessions(reason)
            server.end_listeners()
        await server.stop(reason)

    async def _start(self, server: ServerBase) -> None:
        if server.name in self.blocked:
            raise ServerBlocked(f"server {server.name!r} cannot run: {self.blocked[server.name]}")
        if self._tg is None:  # the mesh stopped (or is stopping): nothing starts again
            raise ServerBlocked(f"server {server.name!r} cannot start: the mesh is not running")
        server.set_state(State.STARTING, "start requested")
        await self._tg.start(server.supervise)

    def end_client_streams(self, reason: str) -> None:
        """End every session and listen stream, so clients are answered before the mesh stops."""
        self.store.close_all(reason)
        for server in self.servers.values():
            server.end_listeners()

    async def wait_settled(self) -> None:
        """Until every server is healthy, failed or stopped; callers bound the wait."""
        settled = (State.HEALTHY, State.FAILED, State.STOPPED)
        while pending := [s for s in self.servers.values() if s.state not in settled]:
            await pending[0].changed.wait()
