"""Desired vs actual servers: spawn (or connect), restart (or reconnect) with backoff, warm spares, clean stop."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any, Protocol

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mcpmesh.backend.connection import Connection
from mcpmesh.backend.remote import RemoteConnection
from mcpmesh.backend.upstream import GATEWAY_INFO, Traffic, Upstream, modern_meta
from mcpmesh.breaker import Circuit, CircuitBreaker
from mcpmesh.config import MeshConfig, ServerConfig
from mcpmesh.errors import BackendTimeout, BackendUnavailable, MeshError, ServerBlocked, SpawnError
from mcpmesh.front.session import FrontSession, Outbox, SessionStore
from mcpmesh.jsonrpc import Message, negotiate_version, params_of, result
from mcpmesh.linelog import LineLog
from mcpmesh.process import ChildProcess, child_environment
from mcpmesh.registry.base import Listing
from mcpmesh.router import Multiplexer
from mcpmesh.routing import Call, CallObserver

UNHEALTHY_AFTER = 2  # probes missed in a row before a live process is restarted
EXIT_READ_GRACE = 1.0  # after exit, stdout already written is still delivered for this long

log = logging.getLogger("mcpmesh.supervisor")


class Recorder(Protocol):
    def __call__(self, kind: str, **detail: Any) -> Any: ...


def _no_record(kind: str, **detail: Any) -> None:
    return None


class State(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # alive, but the last probe went unanswered
    UNHEALTHY = "unhealthy"  # probes unanswered in a row: being restarted
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


class ServerBase:
    """What every supervised server has: config, state with reason, background task spawning."""

    def __init__(self, name: str, config: ServerConfig, store: SessionStore):
        self.name = name
        self.config = config
        self.store = store
        self.state = State.STARTING
        self.reason = "not started yet"
        self.since = time.time()
        self.restarts = 0
        self.restart_reasons: Counter[str] = Counter()  # by cause: exited, unhealthy, spawn_failed, requested ...
        self._restart_cause = "exited"  # why the current process is ending, as a metric label
        self.traffic = Traffic()  # bytes to and from every process of this server
        self.stderr = LineLog()  # every process's stderr lines, numbered (`mcpmesh logs`)
        self._ended_dropped: Counter[str] = Counter()  # stdout lines dropped by processes already gone
        self.redact: Callable[[str], str] = str  # masks configured secrets (the mesh sets it)
        self.blocked: str | None = None  # set before the mesh starts: why this server may not run
        self.record: Recorder = _no_record  # appends to the event log (the mesh sets it)
        self.observers: list[CallObserver] = []  # told of every call to any of its processes
        self.save_listing: Callable[[Listing], None] = lambda listing: None  # into the registry (the mesh sets it)
        self.changed = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None  # set while it runs: cancelling it stops the server
        self._ended = anyio.Event()
        self._stop_reason = "mesh stopped"

    @property
    def circuit(self) -> CircuitBreaker | None:
        """The circuit breaker of its one live process, if it has exactly one."""
        return None

    @property
    def running(self) -> bool:
        return self._scope is not None

    async def supervise(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped: by the mesh stopping, or by `stop()`. Counts as running once started."""
        self._ended = anyio.Event()
        self._stop_reason = "mesh stopped"
        try:
            with anyio.CancelScope() as self._scope:
                task_status.started()
                await self.run()
        finally:
            self._scope = None
            self._ended.set()

    async def stop(self, reason: str) -> None:
        """Stop its processes and keep it stopped until `start`; sessions are ended by the caller."""
        if self._scope is None:
            return
        self._stop_reason = reason
        self._scope.cancel()
        await self._ended.wait()

    def end_sessions(self, reason: str) -> None:
        for session in self.store.sessions_of(self.name):
            self.store.close(session, reason)

    def set_state(self, state: State, reason: str) -> None:
        if state != self.state or reason != self.reason:
            level = logging.WARNING if state == State.FAILED else logging.INFO
            log.log(level, "%s: %s (%s)", self.name, state, reason, extra={"server": self.name})
            self.record("state_changed", state=state.value, reason=reason)
        self.state, self.reason, self.since = state, reason, time.time()
        self.changed.set()
        self.changed = anyio.Event()

    def live_connections(self) -> list[Connection]:
        raise NotImplementedError

    def stdout_dropped(self) -> Counter[str]:
        """Lines (messages) received and dropped, by reason, over every process this server had."""
        total = Counter(self._ended_dropped)
        for child in self.live_connections():
            total.update(child.dropped)
        return total

    def argv(self) -> list[str]:
        """What is spawned (the URL, for a remote server), with configured secrets masked."""
        cfg = self.config
        return [self.redact(part) for part in ([cfg.command, *cfg.args] if cfg.command else [str(cfg.url)])]

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        assert self._tg is not None, "server is not running"
        self._tg.start_soon(fn)

    async def _spawn_child(self) -> Connection:
        """Start the server's connection: a child process for `command`, HTTP for `url` (so a
        restart of a remote server is a reconnect)."""
        cfg = self.config
        if cfg.url is not None:
            return await RemoteConnection.connect(self.name, cfg)
        assert cfg.command is not None  # the config has exactly one of command and url
        env = child_environment(cfg.env, cfg.inherit_env)
        return await ChildProcess.spawn(
            self.name,
            cfg.command,
            cfg.args,
            env,
            cfg.cwd,
            cfg.max_line_bytes,
            redact=self.redact,
            on_stderr=self.stderr.append,
        )

    async def _serve_until_exit(
        self, child: Connection, upstream: Upstream, on_ready: Callable[[], Awaitable[None]]
    ) -> str:
        """Read what the server sends while it lives; return why it ended. Always stops it
        (reaps a process's group, closes a remote connection)."""
        try:
            async with anyio.create_task_group() as tg:
                done = anyio.Event()

                async def read() -> None:
                    try:
                        await upstream.read_loop()
                    finally:
                        done.set()

                tg.start_soon(read)
                try:
                    await on_ready()
                except (MeshError, TimeoutError) as exc:  # raised here, not out of the task group
                    self._restart_cause = "handshake_failed"
                    tg.cancel_scope.cancel()
                    return f"handshake failed: {exc or 'timed out'}"
                code = await child.wait()
                with anyio.move_on_after(EXIT_READ_GRACE):
                    await done.wait()
                tg.cancel_scope.cancel()
            return child.describe_exit(code)
        finally:
            with anyio.CancelScope(shield=True):
                await child.stop()
            self._ended_dropped.update(child.dropped)  # before the caller forgets the connection

    async def run(self) -> None:
        raise NotImplementedError

    async def open_session(self, msg: Message, relay_to: Outbox | None = None) -> tuple[FrontSession, Call | Message]:
        """A new session for this `initialize`, and the reply (or the call that will carry it).
        With `relay_to`, every reply of the session goes to that one stream (legacy HTTP+SSE)."""
        raise NotImplementedError

    def _new_session(self, session_id: str, msg: Message, mux: Multiplexer, relay_to: Outbox | None) -> FrontSession:
        params = params_of(msg)
        caps, info = params.get("capabilities"), params.get("clientInfo")
        return FrontSession(
            id=session_id,
            server=self.name,
            protocol_version=negotiate_version(params.get("protocolVersion")),
            capabilities=caps if isinstance(caps, dict) else {},
            client_info=info if isinstance(info, dict) else {},
            mux=mux,
            relay_to=relay_to,
            stream=relay_to,
        )


class SharedServer(ServerBase):
    """`sharing = "shared"`: one process for every session, restarted with backoff when it exits."""

    def __init__(self, name: str, config: ServerConfig, store: SessionStore):
        super().__init__(name, config, store)
        self.mux = Multiplexer(
            name,
            shared=True,
            request_timeout=config.request_timeout,
            spawn=self.spawn,
            observers=self.observers,
            new_breaker=self._new_breaker,
        )
        self.mux.on_catalog = lambda listing: self.save_listing(listing)
        self.child: Connection | None = None

    async def run(self) -> None:
        policy = self.config.restart
        exits: deque[float] = deque()
        delay = policy.backoff_initial
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.mux.failed_reason = None
                while True:
                    started = time.monotonic()
                    reason = await self._run_once()
                    now = time.monotonic()
                    if now - started > policy.window:
                        delay = policy.backoff_initial  # it ran well for a while: start the backoff over
                    exits.append(now)
                    while exits and exits[0] < now - policy.window:
                        exits.popleft()
                    if len(exits) > policy.max_restarts:
                        why = f"{reason}; {len(exits)} exits within {policy.window:g}s"
                        self.mux.failed_reason = why
                        self.set_state(State.FAILED, why)
                        await anyio.sleep_forever()
                    self.set_state(State.RESTARTING, reason)
                    await anyio.sleep(random.uniform(delay / 2, delay))  # jitter spreads restarts out
                    delay = min(delay * 2, policy.backoff_max)
                    self.restarts += 1
                    self.restart_reasons[self._restart_cause] += 1
        finally:
            self.mux.failed_reason = self._stop_reason  # requests until it starts again fail at once
            self.set_state(State.STOPPED, self._stop_reason)

    def live_connections(self) -> list[Connection]:
        return [self.child] if self.child is not None else []

    async def _run_once(self) -> str:
        self._restart_cause = "spawn_failed"
        try:
            child = await self._spawn_child()
        except MeshError as exc:
            return str(exc)
        self._restart_cause = "exited"
        self.child = child
        self.record("spawned", pid=child.pid, command=self.config.command or self.config.url, argv=self.argv())
        upstream = Upstream(child, self.mux, self.traffic)

        async def handshake() -> None:
            with anyio.fail_after(self.config.startup_timeout):
                await upstream.handshake(self.config.startup_timeout)
            self.mux.attach(upstream)
            self.set_state(State.HEALTHY, f"initialized ({upstream.era} era)")
            self.spawn(lambda: self._probe(child, upstream))

        reason = "ended"
        try:
            reason = await self._serve_until_exit(child, upstream, handshake)
            return reason
        finally:
            self.mux.upstream_closed(upstream, _ended(child))
            self.child = None
            self.record("exited", pid=child.pid, reason=reason)

    def _new_breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self.config.breaker_threshold, self.config.breaker_cooldown, self._circuit_changed)

    @property
    def circuit(self) -> CircuitBreaker | None:
        return self.mux.breaker if self.mux.upstream is not None else None

    def _circuit_changed(self, circuit: Circuit, why: str) -> None:
        self.record("circuit_changed", circuit=circuit.value, reason=why)
        if circuit == Circuit.OPEN:
            self.set_state(State.DEGRADED, f"circuit open: {why}")
        elif circuit == Circuit.CLOSED and self.state == State.DEGRADED:
            self.set_state(State.HEALTHY, f"circuit closed: {why}")

    async def _probe(self, child: Connection, upstream: Upstream) -> None:
        """Ask the live process over MCP at every interval; restart it when it stops answering."""
        method = "ping" if upstream.era == "legacy" else "server/discover"
        params: dict[str, Any] = {} if upstream.era == "legacy" else {"_meta": modern_meta({}, GATEWAY_INFO)}
        misses = 0
        while True:
            await anyio.sleep(self.config.health_interval)
            if upstream.closed or upstream is not self.mux.upstream:
                return
            try:
                await upstream.call(method, params, self.config.health_timeout)  # any answer means alive
            except BackendTimeout:
                misses += 1
            except MeshError:
                return  # the process is gone; its exit is handled by the run loop
            else:
                circuit = self.circuit
                if misses and (circuit is None or circuit.state == Circuit.CLOSED):
                    self.set_state(State.HEALTHY, f"answered {method} again")
                misses = 0
                await self.mux.refresh_catalog(upstream, announce=True)  # a change the server did not announce
                continue
            why = f"no answer to {method} within {self.config.health_timeout:g}s"
            if misses < UNHEALTHY_AFTER:
                self.set_state(State.DEGRADED, why)
                continue
            self.set_state(State.UNHEALTHY, f"{why}, {misses} probes in a row: restarting it")
            self._restart_cause = "unhealthy"
            await child.stop()
            return

    async def open_session(self, msg: Message, relay_to: Outbox | None = None) -> tuple[FrontSession, Call | Message]:
        session_id = self.store.new_id()
        await self.mux.ready_upstream()
        session = self._new_session(session_id, msg, self.mux, relay_to)
        reply = result(msg["id"], self.mux.initialize_result(params_of(msg)))
        self.store.add(session)
        self.mux.join(session)
        return session, reply


class Spare:
    """A started, era-probed process waiting for its session."""

    def __init__(self, child: Connection, upstream: Upstream, mux: Multiplexer):
        self.child, self.upstream, self.mux = child, upstream, mux


class PerSessionServer(ServerBase):
    """`sharing = "session"`: one process per client session, with one warm spare started ahead."""

    def __init__(self, name: str, config: ServerConfig, store: SessionStore):
        super().__init__(name, config, store)
        self._spares_in, self._spares_out = self._spare_channel()
        self._spares_used = False
        self._catalog_read_at = -float("inf")
        self.processes: set[Connection] = set()

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
            self.set_state(State.HEALTHY, f"warm spare ready ({spare.upstream.era} era)")
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
            observers=self.observers,
        )
        self.record("spawned", pid=child.pid, command=self.config.command or self.config.url, argv=self.argv())
        upstream = Upstream(child, mux, self.traffic)
        probed = anyio.Event()
        self.spawn(lambda: self._lifetime(child, upstream, mux, probed))
        try:
            with anyio.fail_after(self.config.startup_timeout):
                await upstream.probe(self.config.startup_timeout)
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
        mux.on_catalog = self.save_listing
        mux.on_initialized = lambda initialized: self._read_catalog(mux, initialized)
        return Spare(child, upstream, mux)

    def _read_catalog(self, mux: Multiplexer, upstream: Upstream) -> None:
        """Read the lists from one of its processes, at most once per health interval: every
        process runs the same command, so one stands for all."""
        now = time.monotonic()
        if now - self._catalog_read_at >= self.config.health_interval:
            self._catalog_read_at = now
            self.spawn(lambda: mux.refresh_catalog(upstream, announce=False))

    async def _lifetime(self, child: Connection, upstream: Upstream, mux: Multiplexer, probed: anyio.Event) -> None:
        self.processes.add(child)
        try:
            reason = await self._serve_until_exit(child, upstream, probed.wait)
        finally:
            self.processes.discard(child)
            mux.upstream_closed(upstream, _ended(child))
        for session in list(mux.sessions):
            self.store.close(session, f"server process {reason}")

    async def open_session(self, msg: Message, relay_to: Outbox | None = None) -> tuple[FrontSession, Call | Message]:
        session_id = self.store.new_id()
        spare = await self._take_spare()
        session = self._new_session(session_id, msg, spare.mux, relay_to)
        spare.mux.on_detach = lambda _session: self.spawn(spare.child.stop)
        self.store.add(session)
        spare.mux.join(session)
        if spare.upstream.era == "modern":
            return session, result(msg["id"], spare.mux.initialize_result(params_of(msg)))
        return session, await spare.mux.handle_request(session, msg)  # the client's own handshake

    async def stateless(self, capabilities: dict[str, Any], client_info: dict[str, Any]) -> Multiplexer:
        """A process of its own for one 2026-07-28 request (the stateless form of a session):
        handshaken on the caller's behalf if it is a handshake-era server, stopped once idle."""
        spare = await self._take_spare()
        if spare.upstream.era == "legacy":
            # Input-required results are not bridged across a per-request process's retries.
            caps = {k: v for k, v in capabilities.items() if k not in ("sampling", "elicitation", "roots")}
            try:
                await spare.upstream.initialize(self.config.startup_timeout, caps, client_info or GATEWAY_INFO)
            except MeshError:
                self.spawn(spare.child.stop)
                raise
        spare.mux.on_idle = lambda: self.spawn(spare.child.stop)
        return spare.mux

    async def _take_spare(self) -> Spare:
        if self.state in (State.FAILED, State.STOPPED):
            raise BackendUnavailable(f"server {self.name!r} is unavailable: {self.reason}")
        with anyio.move_on_after(self.config.startup_timeout):
            while True:
                spare = await self._spares_out.receive()
                if not spare.upstream.closed:
                    return spare
        raise BackendUnavailable(f"server {self.name!r} is unavailable: {self.reason}")


class Supervisor:
    """Owns every configured server and the session store's expiry loop."""

    def __init__(self, config: MeshConfig, store: SessionStore):
        self.config = config
        self.store = store
        self.servers: dict[str, ServerBase] = {
            name: (SharedServer if cfg.sharing == "shared" else PerSessionServer)(name, cfg, store)
            for name, cfg in config.servers.items()
        }
        self._tg: anyio.abc.TaskGroup | None = None
        self._control = anyio.Lock()  # one start/stop/restart at a time

    @asynccontextmanager
    async def run(self) -> AsyncIterator[Supervisor]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for server in self.servers.values():
                if server.blocked is not None:  # e.g. its dedicated port could not be had
                    server.set_state(State.FAILED, server.blocked)
                else:
                    await tg.start(server.supervise)
            tg.start_soon(self.store.expire_idle)
            try:
                yield self
            finally:
                self.end_client_streams("mesh stopping")
                tg.cancel_scope.cancel()
                self._tg = None

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
                shared = isinstance(server, SharedServer)
                await self._stop(server, f"restart requested by {why}", end_sessions=not shared)
            server.restarts += 1
            server.restart_reasons["requested"] += 1
            await self._start(server)

    async def _stop(self, server: ServerBase, reason: str, *, end_sessions: bool) -> None:
        if end_sessions:
            server.end_sessions(reason)
            if isinstance(server, SharedServer):
                server.mux.end_listeners()
        await server.stop(reason)

    async def _start(self, server: ServerBase) -> None:
        if server.blocked is not None:
            raise ServerBlocked(f"server {server.name!r} cannot run: {server.blocked}")
        assert self._tg is not None, "the supervisor is not running"
        server.set_state(State.STARTING, "start requested")
        await self._tg.start(server.supervise)

    def end_client_streams(self, reason: str) -> None:
        """End every session and listen stream, so clients are answered before the mesh stops."""
        self.store.close_all(reason)
        for server in self.servers.values():
            if isinstance(server, SharedServer):
                server.mux.end_listeners()

    async def wait_settled(self) -> None:
        """Until every server is healthy, failed or stopped; callers bound the wait."""
        settled = (State.HEALTHY, State.FAILED, State.STOPPED)
        while pending := [s for s in self.servers.values() if s.state not in settled]:
            await pending[0].changed.wait()


def _ended(child: Connection) -> str:
    """Why a server's connection is gone, for the errors of the requests still in flight on it."""
    code = child.returncode
    return child.describe_exit(code) if code is not None else "stopped"
