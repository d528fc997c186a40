"""Faults against one real mesh (real servers, real sockets, real signals), each followed by the
invariants: /readyz told the truth during the fault; afterwards /healthz 200, validate passes, no
call is in flight and no process is left that the mesh does not own."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest

from mcpmesh.supervision.server import ServerBase, State
from mcpmesh.supervision.shared import SharedServer
from tests.chaos.invariants import (
    RECOVERY,
    assert_invariants,
    truthful_readiness,
    wait_until_settled,
)
from tests.conftest import RunningMesh, everything_server, running_mesh, time_server

pytestmark = [pytest.mark.chaos, pytest.mark.node]

PROTOCOL = "2025-11-25"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
PROBED = {"health_interval": 0.3, "health_timeout": 0.3, "restart": {"backoff_initial": 1.0}}  # a probe notices soon
BURST = 200
IDLE = 8.0  # seconds a dropped session lingers before it expires (the others stay active meanwhile)
Portal = anyio.from_thread.BlockingPortal


@pytest.fixture(scope="module")
def chaos_mesh() -> Iterator[tuple[Portal, RunningMesh]]:
    servers = {
        "time": {**time_server(), **PROBED},
        "everything": {**everything_server(), **PROBED},
        "solo": {**time_server("handshake"), "sharing": "session"},
    }
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        with portal.wrap_async_context_manager(running_mesh(servers, session_idle_timeout=IDLE)) as mesh:
            portal.call(assert_invariants, mesh, "before any fault")
            yield portal, mesh


class Session:
    """A Streamable HTTP session driven by hand: the faults need its raw streams."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http, self.url, self.id = http, url, ""

    def headers(self) -> dict[str, str]:
        return {**ACCEPT, "Mcp-Session-Id": self.id, "MCP-Protocol-Version": PROTOCOL}

    async def open(self) -> Session:
        init = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "chaos", "version": "1"}}
        msg = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}
        reply = await self.http.post(self.url, json=msg, headers=ACCEPT)
        assert reply.status_code == 200, reply.text
        self.id = reply.headers["mcp-session-id"]
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await self.http.post(self.url, json=done, headers=self.headers())).status_code == 202
        return self

    async def ping(self, request_id: int) -> dict[str, Any]:
        msg = {"jsonrpc": "2.0", "id": request_id, "method": "ping"}
        reply = await self.http.post(self.url, json=msg, headers=self.headers())
        assert reply.status_code == 200, reply.text
        return reply.json()  # type: ignore[no-any-return]


def long_call(request_id: int, seconds: float) -> dict[str, Any]:
    arguments = {"duration": seconds, "steps": int(seconds * 4)}
    params = {"name": "trigger-long-running-operation", "arguments": arguments, "_meta": {"progressToken": "p"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    async for line in lines:
        if line.startswith("data:"):
            yield json.loads(line.removeprefix("data:"))


async def until_not_healthy(server: ServerBase) -> None:
    with anyio.fail_after(RECOVERY):
        while server.state == State.HEALTHY:
            await server.changed.wait()


def shared_pids(mesh: RunningMesh) -> dict[str, int | None]:
    """The one process of each shared server (per-session ones come and go with validate's sessions)."""
    servers = mesh.mesh.supervisor.servers.items()
    return {name: s.live_process.pid for name, s in servers if isinstance(s, SharedServer) and s.live_process}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


async def readiness_during_the_fault(mesh: RunningMesh, server: str) -> None:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as http:
        reply = await truthful_readiness(mesh.mesh, http)
    assert reply.status_code == 503 and reply.json()["servers"][server] != "healthy", reply.text


# -- kill -9 of a shared backend while a call is on it ----------------------------------------------
async def kill_a_shared_backend_mid_call(mesh: RunningMesh) -> None:
    server = mesh.mesh.supervisor.servers["everything"]
    pid = server.live_process.pid  # type: ignore[union-attr]
    async with httpx.AsyncClient(timeout=30) as http:
        session = await Session(http, mesh.url("everything")).open()
        body = json.dumps(long_call(7, 20)).encode()
        with anyio.fail_after(RECOVERY):
            async with http.stream("POST", session.url, content=body, headers=session.headers()) as response:
                assert response.status_code == 200
                stream = events(response.aiter_lines())
                async for event in stream:
                    if event.get("method") == "notifications/progress":
                        break  # the call is on the server: it said so
                os.kill(pid, signal.SIGKILL)
                answer = [event async for event in stream if "id" in event][-1]
        assert answer["id"] == 7 and "error" in answer, answer  # failed at once, not after 20 s
        await until_not_healthy(server)
        await readiness_during_the_fault(mesh, "everything")
        await wait_until_settled(mesh)
        assert (await session.ping(8))["result"] == {}  # the session carries on with the new process
    await assert_invariants(mesh, "kill -9 of a shared backend mid-call")
    assert not alive(pid) and server.live_process.pid != pid  # type: ignore[union-attr]


def test_kill_9_of_a_shared_backend_mid_call_fails_the_call_and_the_mesh_recovers(
    chaos_mesh: tuple[Portal, RunningMesh],
) -> None:
    portal, mesh = chaos_mesh
    portal.call(kill_a_shared_backend_mid_call, mesh)


# -- SIGSTOP, then SIGCONT ------------------------------------------------------------------------
async def stop_and_continue_a_backend(mesh: RunningMesh) -> None:
    server = mesh.mesh.supervisor.servers["time"]
    pid = server.live_process.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    try:
        await until_not_healthy(server)  # the first probe missed: degraded
        await readiness_during_the_fault(mesh, "time")
        with anyio.fail_after(RECOVERY):
            while server.state in (State.HEALTHY, State.DEGRADED):  # until it is given up as unhealthy
                await server.changed.wait()
        await readiness_during_the_fault(mesh, "time")
    finally:
        if alive(pid):  # the supervisor may have killed it already (SIGKILL needs no SIGCONT)
            os.kill(pid, signal.SIGCONT)
    await assert_invariants(mesh, "SIGSTOP then SIGCONT of a backend")
    assert not alive(pid), "the frozen process was stopped and replaced"


def test_a_sigstopped_backend_shows_in_readyz_and_is_replaced(chaos_mesh: tuple[Portal, RunningMesh]) -> None:
    portal, mesh = chaos_mesh
    portal.call(stop_and_continue_a_backend, mesh)


# -- a client that goes away in the middle of an SSE stream --------------------------------------
async def disconnect_mid_stream(mesh: RunningMesh) -> None:
    before = shared_pids(mesh)
    async with httpx.AsyncClient(timeout=30) as http:
        session = await Session(http, mesh.url("everything")).open()
        body = json.dumps(long_call(3, 3)).encode()
        with anyio.fail_after(RECOVERY):
            async with http.stream("POST", session.url, content=body, headers=session.headers()) as response:
                async for event in events(response.aiter_lines()):
                    assert event.get("method") == "notifications/progress", event
                    break  # and hang up with the call in flight
            async with http.stream("GET", session.url, headers=session.headers()) as listening:
                assert listening.status_code == 200  # the session's GET stream, dropped as soon as it opened
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as probe:
            await truthful_readiness(mesh.mesh, probe)
        await wait_until_settled(mesh)
        assert (await session.ping(4))["result"] == {}
    await assert_invariants(mesh, "a client that disconnects mid-SSE-stream")
    assert shared_pids(mesh) == before  # nothing restarted


def test_a_client_hanging_up_mid_stream_leaves_no_call_behind(chaos_mesh: tuple[Portal, RunningMesh]) -> None:
    portal, mesh = chaos_mesh
    portal.call(disconnect_mid_stream, mesh)


# -- 200 sessions at once, then all dropped without DELETE ---------------------------------------
async def burst_and_drop(mesh: RunningMesh) -> None:
    before = shared_pids(mesh)
    opened: list[str] = []
    # The pool lets an idle connection go well before the mesh's 5 s keep-alive ends it: reusing
    # one at the moment the server closes it is a ReadError (the race every HTTP/1.1 client has;
    # CI's load made 200 sessions slow enough to meet it).
    limits = httpx.Limits(max_connections=BURST, keepalive_expiry=1.0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def one() -> None:
            session = await Session(http, mesh.url("time")).open()
            assert (await session.ping(1))["result"] == {}
            opened.append(session.id)

        async def readiness() -> None:
            async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as probe:
                await truthful_readiness(mesh.mesh, probe)

        with anyio.fail_after(RECOVERY * 2):
            async with anyio.create_task_group() as tg:
                for _ in range(BURST):
                    tg.start_soon(one)
                tg.start_soon(readiness)
    assert len(set(opened)) == BURST  # the client went away without a DELETE for any of them
    with anyio.fail_after(RECOVERY):  # they expire as idle ones
        while {s.id for s in mesh.mesh.store.sessions()} & set(opened):  # noqa: ASYNC110  # expiry sends no event
            await anyio.sleep(0.1)
    await assert_invariants(mesh, "a burst of 200 sessions, dropped without DELETE")
    assert shared_pids(mesh) == before  # nothing restarted


def test_a_burst_of_sessions_dropped_without_delete_expires_and_leaves_nothing(
    chaos_mesh: tuple[Portal, RunningMesh],
) -> None:
    portal, mesh = chaos_mesh
    portal.call(burst_and_drop, mesh)
