"""One configured server as the supervisor sees it: its state with reason, its config, how its
processes (or remote connections) are started and served until they end. The two kinds,
shared.py and per_session.py, build on this."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import anyio
import anyio.abc

from mcpmesh.backend.connection import Connection
from mcpmesh.backend.process import ChildProcess, child_environment
from mcpmesh.backend.upstream import Traffic, Upstream
from mcpmesh.config import ServerConfig, expand_env
from mcpmesh.errors import CommandNotFound, MeshError, SpawnError
from mcpmesh.jsonrpc import Message, params_of
from mcpmesh.protocol.versions import negotiate_version
from mcpmesh.registry.base import Listing
from mcpmesh.router.breaker import CircuitBreaker
from mcpmesh.router.multiplexer import Multiplexer
from mcpmesh.router.outbox import Outbox
from mcpmesh.router.outcomes import CallObserver
from mcpmesh.router.session import Call, ClientSession, SessionStore
from mcpmesh.supervision.orphans import ProcessLedger
from mcpmesh.supervision.process_cap import ProcessGate
from mcpmesh.supervision.stderr_log import StderrLog

EXIT_READ_GRACE = 1.0  # after exit, stdout already written is still delivered for this long

log = logging.getLogger("mcpmesh.supervisor")


RESTART_CAUSES = ("exited", "unhealthy", "spawn_failed", "handshake_failed", "requested")
"""Why a server's process was restarted (counted in `restart_reasons`)."""


class EventLog(Protocol):
    """Appends to the mesh's event log (the registry's `append`)."""

    def __call__(self, kind: str, server: str | None, **detail: Any) -> Any: ...


def _no_event(kind: str, server: str | None, **detail: Any) -> None:
    return None


@dataclass(frozen=True)
class Reporting:
    """Where every server reports what it observes, given by whoever builds the supervisor."""

    events: EventLog = _no_event
    save_listing: Callable[[str, Listing], None] = lambda server, listing: None  # (server, list as read)
    redact: Callable[[str], str] = str  # masks configured secrets in what is recorded
    observers: Sequence[CallObserver] = ()  # told of every call to any of its processes
    ledger: ProcessLedger = field(default_factory=ProcessLedger)  # marks and journals every process spawned


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

    restart_causes: tuple[str, ...] = ()
    """Restart causes its metrics show from the start (at 0 until they happen)."""
    restart_keeps_sessions = False
    """Whether an operator's restart leaves its client sessions open."""

    def __init__(self, name: str, config: ServerConfig, store: SessionStore, reporting: Reporting):
        self.name = name
        self.config = config
        self.store = store
        self.reporting = reporting
        self.state = State.STARTING
        self.reason = "not started yet"
        self.since = time.time()
        self.restarts = 0
        self.last_error: str | None = None  # the reason of its last trouble, kept after it recovers
        self.last_error_at: float | None = None
        self.restart_reasons: Counter[str] = Counter()  # by cause: exited, unhealthy, spawn_failed, requested ...
        self._restart_cause = "exited"  # why the current process is ending, as a metric label
        self.traffic = Traffic()  # bytes to and from every process of this server
        self.stderr = StderrLog()  # every process's stderr lines, numbered (`mcpmesh logs`)
        self.gate = ProcessGate(name, config.max_processes if config.command is not None else None)
        self._ended_dropped: Counter[str] = Counter()  # stdout lines dropped by processes already gone
        self.changed = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None  # set while it runs: cancelling it stops the server
        self._ended = anyio.Event()
        self._stop_reason = "mesh stopped"

    def record(self, kind: str, **detail: Any) -> None:
        """Append an event about this server to the mesh's event log."""
        self.reporting.events(kind, self.name, **detail)

    def save_listing(self, listing: Listing) -> None:
        """Keep a list (tools, prompts, resources) as last read from one of its processes."""
        self.reporting.save_listing(self.name, listing)

    @property
    def circuit(self) -> CircuitBreaker | None:
        """The circuit breaker of its one live process, if it has exactly one."""
        return None

    @property
    def live_process(self) -> Connection | None:
        """The connection of the one process that serves every session, if it has one now."""
        return None

    @property
    def live_upstream(self) -> Upstream | None:
        """The initialized MCP connection of that one process, if it has one now."""
        return None

    def end_listeners(self) -> None:
        """End its 2026-07-28 listen streams (they outlive no stop)."""

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
            # Trouble, and the end of it, show at `up`'s default level; routine changes do not.
            level = logging.WARNING if state in TROUBLE or self.state in TROUBLE else logging.INFO
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
        return [self.reporting.redact(part) for part in ([cfg.command, *cfg.args] if cfg.command else [str(cfg.url)])]

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        assert self._tg is not None, "server is not running"
        self._tg.start_soon(fn)

    async def _spawn_child(self) -> Connection:
        """Start the server's connection: a child process for `command`, HTTP for `url` (so a
        restart of a remote server is a reconnect)."""
        cfg = self.config
        if cfg.url is not None:  # httpx loads only for remote servers
            from mcpmesh.backend.legacy_sse import LegacySseConnection
            from mcpmesh.backend.streamable_http import StreamableHttpConnection

            transport = LegacySseConnection if cfg.transport == "sse" else StreamableHttpConnection
            return await transport.connect(self.name, cfg)
        assert cfg.command is not None  # the config has exactly one of command and url
        try:
            env = {**child_environment(expand_env(cfg.env), cfg.inherit_env), **self.reporting.ledger.environment}
        except KeyError as exc:  # checked at load, unless the server was disabled then
            raise SpawnError(f"cannot start {self.name}: environment variable {exc.args[0]} is not set") from None
        await self.gate.admit()  # waits while the server has max_processes processes
        try:
            child = await ChildProcess.spawn(
                self.name,
                cfg.command,
                cfg.args,
                env,
                cfg.cwd,
                cfg.max_line_bytes,
                redact=self.reporting.redact,
                on_stderr=self.stderr.append,
                on_exit=self._process_exited,
            )
        except BaseException:
            self.gate.exited()
            raise
        self.reporting.ledger.started(child.pid)
        return child

    def _process_exited(self, pid: int) -> None:
        self.gate.exited(pid)
        self.reporting.ledger.ended(pid)

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

    async def open_session(self, msg: Message, relay_to: Outbox | None = None) -> tuple[ClientSession, Call | Message]:
        """A new session for this `initialize`, and the reply (or the call that will carry it).
        With `relay_to`, every reply of the session goes to that one stream (legacy HTTP+SSE)."""
        raise NotImplementedError

    async def router_for_request(
        self, capabilities: dict[str, Any], client_info: dict[str, Any], request_state: str | None = None
    ) -> Multiplexer:
        """The router that serves one 2026-07-28 request (which has no session): for a retry that
        carries a requestState, the one holding the call it resumes; its `on_idle`, if set, must be
        called once the request leaves nothing in flight."""
        raise NotImplementedError

    def _new_session(self, session_id: str, msg: Message, mux: Multiplexer, relay_to: Outbox | None) -> ClientSession:
        params = params_of(msg)
        caps, info = params.get("capabilities"), params.get("clientInfo")
        return ClientSession(
            id=session_id,
            server=self.name,
            protocol_version=negotiate_version(params.get("protocolVersion")),
            capabilities=caps if isinstance(caps, dict) else {},
            client_info=info if isinstance(info, dict) else {},
            mux=mux,
            relay_to=relay_to,
            stream=relay_to,
        )


def not_retried(exc: CommandNotFound, name: str) -> str:
    """Why a server whose command is missing failed at once, and what brings it back."""
    return f"{exc}; not retried: install it, then `mcpmesh restart {name}`"


def ended_reason(child: Connection) -> str:
    """Why a server's connection is gone, for the errors of the requests still in flight on it."""
    code = child.returncode
    return child.describe_exit(code) if code is not None else "stopped"
