"""`sharing = "session"`: a process per client session (and per 2026-07-28 request), from a warm spare."""

from __future__ import annotations

import random
import time
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mcpmesh.backend.connection import Connection
from mcpmesh.backend.upstream import Upstream
from mcpmesh.config import ServerConfig
from mcpmesh.errors import BackendUnavailable, CommandNotFound, MeshError, SpawnError
from mcpmesh.jsonrpc import Message, params_of, result
from mcpmesh.protocol.envelope import GATEWAY_INFO
from mcpmesh.protocol.requests import ParamHeaders
from mcpmesh.router.multiplexer import Multiplexer
from mcpmesh.router.outbox import Outbox
from mcpmesh.router.session import Call, ClientSession, SessionStore
from mcpmesh.supervision.probes import UNHEALTHY_AFTER, probe_method, probes
from mcpmesh.supervision.process_cap import Claim
from mcpmesh.supervision.server import EXIT_READ_GRACE, Reporting, ServerBase, State, ended_reason, log, not_retried


class Spare:
    """A started process waiting for its session: its era probed (`prefer_era = "2026-07-28"`), or
    left for its client's own handshake to settle."""

    def __init__(self, child: Connection, upstream: Upstream, mux: Multiplexer):
        self.child, self.upstream, self.mux = child, upstream, mux
        self.claim: Claim | None = None  # the session's or request's, once one takes it


class PerSessionServer(ServerBase):
    """`sharing = "session"`: one process per client session, with one warm spare started ahead."""

    def __init__(self, name: str, config: ServerConfig, store: SessionStore, reporting: Reporting):
        super().__init__(name, config, store, reporting)
        self._spares_in, self._spares_out = self._spare_channel()
        self._spares_used = False
        self._catalog_read_at = -float("inf")
        self.processes: set[Connection] = set()
        self.request_routers: set[Multiplexer] = set()  # of the per-request processes alive now
        self.tool_params: dict[str, ParamHeaders] = {}  # learned from any of its processes, for 2026 checks
        self._tools_read = False

    @staticmethod
    def _spare_channel() -> tuple[MemoryObjectSendStream[Spare], MemoryObjectReceiveStream[Spare]]:
        return anyio.create_memory_object_stream[Spare](0)

    def live_connections(self) -> list[Connection]:
        return list(self.processes)

    async def run(self) -> None:
        if self._spares_used:  # an earlier run (stopped by an operator) closed the channel
            self._spares_in, self._spares_out = self._spare_channel()
        self._spares_used = True
        try:
            async with self._spares_in, self._spares_out, anyio.create_task_group() as tg:
                self._tg = tg
                await self._produce_spares()
        finally:
            self.set_state(State.STOPPED, self._stop_reason)

    async def _produce_spares(self) -> None:
        policy = self.config.restart
        failures, delay = 0, policy.backoff_initial
        while True:
            try:
                spare = await self._start_spare()
            except CommandNotFound as exc:
                self.set_state(State.FAILED, not_retried(exc, self.name))
                await anyio.sleep_forever()
            except (MeshError, TimeoutError) as exc:
                failures += 1
                if failures > policy.max_restarts:
                    self.set_state(State.FAILED, f"cannot start: {exc}; {failures} failures in a row")
                    await anyio.sleep_forever()
                self.set_state(State.RESTARTING, f"cannot start: {exc}")
                await anyio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, policy.backoff_max)
                continue
            failures, delay = 0, policy.backoff_initial
            era = f" ({spare.upstream.era} era)" if spare.upstream.era is not None else ""
            self.set_state(State.HEALTHY, f"warm spare ready{era}")
            if spare.upstream.era == "modern":  # needs no handshake: its lists can be read now
                self._read_catalog(spare.mux, spare.upstream)
            await self._spares_in.send(spare)

    async def _start_spare(self) -> Spare:
        child = await self._spawn_child()
        mux = Multiplexer(
            self.name,
            shared=False,
            request_timeout=self.config.request_timeout,
            spawn=self.spawn,
            observers=self.reporting.observers,
            on_catalog_change=self.save_listing,
            on_initialized=lambda initialized: self._read_catalog(mux, initialized),
            tool_params=self.tool_params,
        )
        self.record("spawned", pid=child.pid, command=self.config.command or self.config.url, argv=self.argv())
        upstream = Upstream(child, mux, self.traffic)
        probed = anyio.Event()
        self.spawn(lambda: self._lifetime(child, upstream, mux, probed))
        try:
            with anyio.fail_after(self.config.startup_timeout):
                if self.config.prefer_era == "2026-07-28":
                    await upstream.probe(self.config.startup_timeout)
                else:  # the era is its client's: a handshake-era client's own initialize settles it
                    await upstream.check_alive(self.config.startup_timeout)
        except (MeshError, TimeoutError) as exc:
            code: int | None = None
            with anyio.move_on_after(EXIT_READ_GRACE):
                code = await child.wait()
            self.spawn(child.stop)
            if code is not None:
                raise SpawnError(f"{child.describe_exit(code)} before answering") from exc
            raise
        finally:
            probed.set()
        mux.attach(upstream)
        return Spare(child, upstream, mux)

    def _read_catalog(self, mux: Multiplexer, upstream: Upstream) -> None:
        """Read the lists from one of its processes, at most once per catalog interval: every
        process runs the same command, so one stands for all."""
        now = time.monotonic()
        if now - self._catalog_read_at >= self.config.catalog_interval:
            self._catalog_read_at = now
            self.spawn(lambda: mux.catalog.refresh(upstream, announce=False))

    async def _lifetime(self, child: Connection, upstream: Upstream, mux: Multiplexer, probed: anyio.Event) -> None:
        self.processes.add(child)

        async def ready() -> None:
            await probed.wait()
            self.spawn(lambda: self._watch(child, upstream))

        try:
            reason = await self._serve_until_exit(child, upstream, ready)
        finally:
            self.processes.discard(child)
            self.request_routers.discard(mux)
            mux.upstream_closed(upstream, ended_reason(child))
        for session in list(mux.sessions):
            self.store.close(session, f"server process {reason}")

    async def _watch(self, child: Connection, upstream: Upstream) -> None:
        """Probe one of its processes (a spare, a session's, a request's); stop it when it stops
        answering: its session then ends, and the client starts a new one on a fresh process."""
        async for misses in probes(upstream, self.config.health_interval, self.config.health_timeout):
            if misses >= UNHEALTHY_AFTER:
                why = f"no answer to {probe_method(upstream)} within {self.config.health_timeout:g}s, {misses} in a row"
                log.warning("%s: process %s is unhealthy (%s): stopping it", self.name, child.pid, why)
                self.record("process_unhealthy", pid=child.pid, reason=why)
                await child.stop()
                return

    async def open_session(self, msg: Message, relay_to: Outbox | None = None) -> tuple[ClientSession, Call | Message]:
        session_id = self.store.new_id()
        spare = await self._take_spare()
        session = self._new_session(session_id, msg, spare.mux, relay_to)
        spare.mux.on_detach = lambda _session: self._give_back(spare)
        try:
            self.store.add(session)
        except BaseException:  # e.g. the session cap, reached meanwhile: the process is not kept for nobody
            self._give_back(spare)
            raise
        spare.mux.join(session)
        if spare.upstream.era == "modern":
            return session, result(msg["id"], spare.mux.initialize_result(params_of(msg)))
        return session, await spare.mux.handle_request(session, msg)  # the client's own handshake

    async def router_for_request(
        self, capabilities: dict[str, Any], client_info: dict[str, Any], request_state: str | None = None
    ) -> Multiplexer:
        """A process of its own for one 2026-07-28 request (the stateless form of a session):
        handshaken on the caller's behalf if it is a handshake-era server, stopped once idle. A
        retry whose requestState resumes a call suspended on one of them goes to that one."""
        if request_state is not None:
            for mux in self.request_routers:
                handle = mux.inputs.sealer.handle_of(request_state)
                if handle is not None and handle in mux.inputs.waiting:
                    return mux
        spare = await self._take_spare()
        try:
            if spare.upstream.era != "modern":
                await spare.upstream.initialize(self.config.startup_timeout, capabilities, client_info or GATEWAY_INFO)
            if not self._tools_read:  # a 2026-07-28 tools/call is checked against the tools' annotations
                self._tools_read = True
                await spare.mux.catalog.refresh(spare.upstream, announce=False, kinds=["tools"])
        except BaseException:  # the request gets the error; its process is not kept for nobody
            self._give_back(spare)
            raise
        spare.mux.on_idle = lambda: self._give_back(spare)
        self.request_routers.add(spare.mux)
        return spare.mux

    async def _take_spare(self) -> Spare:
        """The warm spare, claimed for one session or request (TooManyProcesses, at once, when
        every process the server may have is claimed already)."""
        if self.state in (State.FAILED, State.STOPPED):
            raise BackendUnavailable(f"server {self.name!r} is unavailable: {self.reason}")
        claim = self.gate.claim()
        try:
            spare = await self._next_spare()
        except BaseException:
            claim.release()
            raise
        claim.hold(spare.child.pid)
        spare.claim = claim
        return spare

    def _give_back(self, spare: Spare) -> None:
        """Its session or request is done: stop its process, and let another claim its place."""
        if spare.claim is not None:
            spare.claim.release()
        self.spawn(spare.child.stop)

    async def _next_spare(self) -> Spare:
        with anyio.move_on_after(self.config.startup_timeout):
            while True:
                spare = await self._spares_out.receive()
                if not spare.upstream.closed:
                    return spare
        raise BackendUnavailable(f"server {self.name!r} is unavailable: {self.reason}")
