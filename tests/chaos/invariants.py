"""What must hold after every chaos scenario (issue 14): the mesh answers /healthz, every server is
healthy again, no call is left in flight, `mcpmesh validate` passes, and no process carries the
mesh's marker outside the process groups the mesh journals as its own."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import httpx

from mcpmesh.app import Mesh
from mcpmesh.cli.validate import Validator
from mcpmesh.supervision.orphans import OWNER_VARIABLE
from mcpmesh.supervision.per_session import PerSessionServer
from mcpmesh.supervision.server import State
from mcpmesh.supervision.shared import SharedServer
from tests.conftest import RunningMesh

RECOVERY = 30  # seconds a fault gets to be undone (a restart with its backoff, an idle session expiring)


def marked_processes(mesh: Mesh) -> dict[int, int]:
    """Every live process carrying this mesh's owner marker (descendants included), pid: process group."""
    marker = f"{OWNER_VARIABLE}={mesh.ledger.environment[OWNER_VARIABLE]}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if marker in environ.split(b"\0"):
                found[int(entry.name)] = os.getpgid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile, or a zombie: nothing left of it to read
    return found


def live_pids(mesh: Mesh) -> set[int]:
    """The processes the supervisor serves with right now, shared and per-session."""
    pids = set()
    for server in mesh.supervisor.servers.values():
        connections = server.live_connections() if isinstance(server, PerSessionServer) else [server.live_process]
        pids |= {c.pid for c in connections if c is not None and c.pid is not None}
    return pids


def calls_in_flight(mesh: Mesh) -> list[str]:
    """Client calls still registered anywhere: in a session, or in a server's multiplexer."""
    left = [f"session {s.id}: {sorted(map(str, s.inflight))}" for s in mesh.store.sessions() if s.inflight]
    muxes = {id(s.mux): s.mux for s in mesh.store.sessions() if getattr(s, "mux", None) is not None}
    for server in mesh.supervisor.servers.values():
        if isinstance(server, SharedServer):
            muxes[id(server.mux)] = server.mux
        elif isinstance(server, PerSessionServer):
            muxes |= {id(mux): mux for mux in server.request_routers}
    left += [f"{mux.server}: {sorted(map(str, mux.calls))}" for mux in muxes.values() if mux.calls]
    return left


def not_healthy(mesh: Mesh) -> list[str]:
    return [name for name, s in mesh.supervisor.servers.items() if s.state != State.HEALTHY]


def states(mesh: Mesh) -> dict[str, str]:
    return {name: s.state.value for name, s in mesh.supervisor.servers.items()}


async def truthful_readiness(mesh: Mesh, http: httpx.AsyncClient) -> httpx.Response:
    """GET /readyz and check it said what the supervisor knew while it answered: each server's
    state as it was just before or just after, and 503 unless every one it named is healthy."""
    before = states(mesh)
    reply = await http.get("/readyz")
    after = states(mesh)
    body = reply.json()
    assert body["servers"].keys() == before.keys(), body
    for name, state in body["servers"].items():
        assert state in (before[name], after[name]), (name, body, before, after)
    all_healthy = set(body["servers"].values()) == {State.HEALTHY.value}
    assert reply.status_code == (200 if all_healthy else 503) and body["ready"] is all_healthy, body
    return reply


async def wait_until_settled(mesh: RunningMesh) -> None:
    """Every server healthy and every call finished, within RECOVERY."""
    with anyio.fail_after(RECOVERY):
        while not_healthy(mesh.mesh) or calls_in_flight(mesh.mesh):  # noqa: ASYNC110  # no event spans both
            await anyio.sleep(0.05)


async def assert_invariants(mesh: RunningMesh, scenario: str) -> None:
    """The issue's checks after a fault is gone; `scenario` names it in every failure."""
    await wait_until_settled(mesh)
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200, (scenario, health.text)
        assert set(health.json()["servers"].values()) == {"healthy"}, (scenario, health.json())
        await truthful_readiness(mesh.mesh, http)
    checks = await Validator(mesh.base_url).run()
    assert [c for c in checks if not c.ok] == [], scenario
    assert calls_in_flight(mesh.mesh) == [], scenario
    with anyio.fail_after(RECOVERY):  # a process the supervisor let go of may take a moment to exit
        while set(marked_processes(mesh.mesh).values()) != set(mesh.mesh.ledger._groups):  # noqa: ASYNC110  # /proc has no event
            await anyio.sleep(0.05)
    serving = live_pids(mesh.mesh)
    assert serving and serving <= set(mesh.mesh.ledger._groups), (scenario, serving)  # what serves is journaled
