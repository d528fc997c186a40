"""One configured server as the supervisor sees it: its state with reason, its config, how its
processes (or remote connections) are started and served until they end. The two kinds,
shared_server.py and session_server.py, build on this."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from enum import StrEnum
from typing import Any, Protocol

import anyio
import anyio.abc

from mcpmesh.backend.connection import Connection
from mcpmesh.backend.upstream import GATEWAY_INFO, Traffic, Upstream, modern_meta
from mcpmesh.breaker import CircuitBreaker
from mcpmesh.config import ServerConfig
from mcpmesh.errors import BackendTimeout, MeshError
from mcpmesh.front.session import FrontSession, Outbox, SessionStore
from mcpmesh.jsonrpc import Message, negotiate_version, params_of
from mcpmesh.linelog import LineLog
from mcpmesh.process import ChildProcess, child_environment
from mcpmesh.registry.base import Listing
from mcpmesh.router import Multiplexer
from mcpmesh.routing import Call, CallObserver

EXIT_READ_GRACE = 1.0  # after exit, stdout already written is still delivered for this long
UNHEALTHY_AFTER = 2  # probes missed in a row before a live process is stopped

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


# States whose reason is an error worth remembering after the server recovers.
TROUBLE = frozenset({State.DEGRADED, State.UNHEALTHY, State.RESTARTING, State.FAILED})


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
        self.last_error: str | None = None  # the reason of its last trouble, kept after it recovers
        self.last_error_at: float | None = None
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
        if state in TROUBLE:
            self.last_error, self.last_error_at = reason, self.since
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
            from mcpmesh.backend.remote import RemoteConnection  # httpx loads only for remote servers

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


def ended_reason(child: Connection) -> str:
    """Why a server's connection is gone, for the errors of the requests still in flight on it."""
    code = child.returncode
    return child.describe_exit(code) if code is not None else "stopped"


async def probes(upstream: Upstream, interval: float, timeout: float) -> AsyncIterator[int]:  # noqa: ASYNC109  # bounds each probe's exchange
    """Ask the process over MCP at every interval (`ping`, or `server/discover` for a 2026-07-28
    server; any answer, even an error, means it is serving) and yield how many probes in a row went
    unanswered: 0 after an answer. Ends when the process is gone."""
    method = probe_method(upstream)
    params: dict[str, Any] = {"_meta": modern_meta({}, GATEWAY_INFO)} if upstream.era == "modern" else {}
    misses = 0
    while True:
        await anyio.sleep(interval)
        if upstream.closed:
            return
        try:
            await upstream.call(method, params, timeout)
        except BackendTimeout:
            misses += 1
        except MeshError:
            return  # the process is gone; whoever runs it handles its exit
        else:
            misses = 0
        yield misses


def probe_method(upstream: Upstream) -> str:
    return "server/discover" if upstream.era == "modern" else "ping"
