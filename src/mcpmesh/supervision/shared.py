"""`sharing = "shared"`: one process serves every session; restarted with backoff and probed over MCP."""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any

import anyio
import anyio.abc

from mcpmesh.backend.connection import Connection
from mcpmesh.backend.upstream import Upstream
from mcpmesh.config import ServerConfig
from mcpmesh.errors import CommandNotFound, MeshError
from mcpmesh.jsonrpc import Message, params_of, result
from mcpmesh.router.breaker import Circuit, CircuitBreaker
from mcpmesh.router.multiplexer import Multiplexer
from mcpmesh.router.outbox import Outbox
from mcpmesh.router.session import Call, ClientSession, SessionStore
from mcpmesh.supervision.probes import UNHEALTHY_AFTER, probe_method, probes
from mcpmesh.supervision.server import RESTART_CAUSES, Reporting, ServerBase, State, ended_reason, not_retried


class SharedServer(ServerBase):
    """`sharing = "shared"`: one process for every session, restarted with backoff when it exits."""

    restart_causes = RESTART_CAUSES
    restart_keeps_sessions = True  # their next requests wait for the new process

    def __init__(self, name: str, config: ServerConfig, store: SessionStore, reporting: Reporting):
        super().__init__(name, config, store, reporting)
        self.mux = Multiplexer(
            name,
            shared=True,
            request_timeout=config.request_timeout,
            spawn=self.spawn,
            observers=self.reporting.observers,
            new_breaker=self._new_breaker,
            on_catalog_change=self.save_listing,
        )
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
                    try:
                        reason = await self._run_once()
                    except CommandNotFound as exc:
                        await self._fail(not_retried(exc, self.name))
                    now = time.monotonic()
                    if now - started > policy.window:
                        delay = policy.backoff_initial  # it ran well for a while: start the backoff over
                    exits.append(now)
                    while exits and exits[0] < now - policy.window:
                        exits.popleft()
                    if len(exits) > policy.max_restarts:
                        await self._fail(f"{reason}; {len(exits)} exits within {policy.window:g}s")
                    self.set_state(State.RESTARTING, reason)
                    await anyio.sleep(random.uniform(delay / 2, delay))  # jitter spreads restarts out
                    delay = min(delay * 2, policy.backoff_max)
                    self.restarts += 1
                    self.restart_reasons[self._restart_cause] += 1
        finally:
            self.mux.failed_reason = self._stop_reason  # requests until it starts again fail at once
            self.set_state(State.STOPPED, self._stop_reason)

    async def _fail(self, why: str) -> None:
        """Give up until an operator restarts it: requests fail at once, saying why."""
        self.mux.failed_reason = why
        self.set_state(State.FAILED, why)
        await anyio.sleep_forever()

    def live_connections(self) -> list[Connection]:
        return [self.child] if self.child is not None else []

    @property
    def live_process(self) -> Connection | None:
        return self.child

    @property
    def live_upstream(self) -> Upstream | None:
        return self.mux.upstream

    def end_listeners(self) -> None:
        self.mux.end_listeners()

    async def _run_once(self) -> str:
        self._restart_cause = "spawn_failed"
        try:
            child = await self._spawn_child()
        except CommandNotFound:
            raise
        except MeshError as exc:
            return str(exc)
        self._restart_cause = "exited"
        self.child = child
        self.record("spawned", pid=child.pid, command=self.config.command or self.config.url, argv=self.argv())
        upstream = Upstream(child, self.mux, self.traffic)

        async def handshake() -> None:
            with anyio.fail_after(self.config.startup_timeout):
                await upstream.handshake(self.config.startup_timeout, self.config.prefer_era == "2026-07-28")
            self.mux.attach(upstream)
            self.set_state(State.HEALTHY, f"initialized ({upstream.era} era)")
            self.spawn(lambda: self._probe(child, upstream))

        reason = "ended"
        try:
            reason = await self._serve_until_exit(child, upstream, handshake)
            return reason
        finally:
            self.mux.upstream_closed(upstream, ended_reason(child))
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
        """Watch the live process over MCP; restart it when it stops answering."""
        why = f"no answer to {probe_method(upstream)} within {self.config.health_timeout:g}s"
        was_missing, catalog_read = False, time.monotonic()  # read at the handshake
        async for misses in probes(upstream, self.config.health_interval, self.config.health_timeout):
            if upstream is not self.mux.upstream:
                return
            if misses == 0:
                circuit = self.circuit
                if was_missing and (circuit is None or circuit.state == Circuit.CLOSED):
                    self.set_state(State.HEALTHY, f"answered {probe_method(upstream)} again")
                was_missing = False
                if time.monotonic() - catalog_read >= self.config.catalog_interval:
                    catalog_read = time.monotonic()  # announced changes are read when announced
                    await self.mux.catalog.refresh(upstream, announce=True)  # a change the server did not announce
            elif misses < UNHEALTHY_AFTER:
                was_missing = True
                self.set_state(State.DEGRADED, why)
            else:
                self.set_state(State.UNHEALTHY, f"{why}, {misses} probes in a row: restarting it")
                self._restart_cause = "unhealthy"
                await child.stop()
                return

    async def open_session(self, msg: Message, relay_to: Outbox | None = None) -> tuple[ClientSession, Call | Message]:
        session_id = self.store.new_id()
        await self.mux.ready_upstream()
        session = self._new_session(session_id, msg, self.mux, relay_to)
        reply = result(msg["id"], self.mux.initialize_result(params_of(msg)))
        self.store.add(session)
        self.mux.join(session)
        return session, reply

    async def router_for_request(
        self, capabilities: dict[str, Any], client_info: dict[str, Any], request_state: str | None = None
    ) -> Multiplexer:
        return self.mux  # every request shares the one process, retries included
