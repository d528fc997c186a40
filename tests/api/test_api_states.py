"""The API with a server in every state it can be in, each reached for real: what /v1/servers,
Consul's health shape and /readyz say must match the state and its reason."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import anyio
import httpx
import mcp
import pytest

from mcpmesh.supervision.server import ServerBase, State
from mcpmesh.supervision.shared import SharedServer
from tests.conftest import RunningMesh, conformance_server, fixture_server, running_mesh

pytestmark = pytest.mark.anyio

CONSUL = {
    "healthy": "passing",
    "degraded": "warning",
    "starting": "warning",
    "restarting": "warning",
    "unhealthy": "critical",
    "failed": "critical",
    "stopped": "critical",
}
SLOW_BACKOFF = {"restart": {"backoff_initial": 30, "backoff_max": 30}}


async def reach(server: ServerBase, wanted: State) -> None:
    with anyio.fail_after(20):
        while server.state != wanted:
            await server.changed.wait()


async def observe(mesh: RunningMesh, name: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as http:
        described = (await http.get(f"/v1/servers/{name}")).raise_for_status().json()
        consul = (await http.get(f"/v1/health/service/{name}")).raise_for_status().json()
        ready = (await http.get("/readyz")).json()
    return described, consul, ready


def check(described: dict[str, Any], consul: list[dict[str, Any]], ready: dict[str, Any], state: str) -> None:
    assert described["state"] == state and described["reason"]
    assert consul[0]["Checks"][0]["Status"] == CONSUL[state]
    assert consul[0]["Checks"][0]["Output"] == described["reason"]
    assert ready["ready"] is (state == "healthy") and ready["servers"] == {described["name"]: state}
    running = state in ("starting", "healthy", "degraded", "unhealthy")  # a process exists (spawned, or serving)
    assert (described["pid"] is not None) is running
    assert (described["uptime"] is not None) is (state == "healthy")
    if state in ("degraded", "unhealthy", "restarting", "failed"):
        assert described["last_error"] == described["reason"] and described["last_error_at"] == described["since"]


async def test_starting() -> None:
    never_answers = {"command": sys.executable, "args": ["-c", "import time; time.sleep(60)"], "startup_timeout": 30}
    async with running_mesh({"s": never_answers}, settle=False) as mesh:
        check(*await observe(mesh, "s"), "starting")


async def test_healthy_degraded_and_stopped() -> None:
    breaker = {"request_timeout": 0.3, "breaker_threshold": 1, "breaker_cooldown": 60}
    async with running_mesh({"s": {**fixture_server("faulty_server.py"), **breaker}}) as mesh:
        server = mesh.mesh.supervisor.servers["s"]
        described, consul, ready = await observe(mesh, "s")
        check(described, consul, ready, "healthy")
        assert described["last_error"] is None  # no trouble yet
        async with mcp.Client(mesh.url("s"), mode="legacy") as client:
            with pytest.raises(mcp.MCPError):
                await client.call_tool("hang", {})  # one time-out opens the circuit
        await reach(server, State.DEGRADED)
        check(*await observe(mesh, "s"), "degraded")
        async with httpx.AsyncClient(base_url=mesh.base_url) as http:
            assert (await http.post("/v1/servers/s/stop")).status_code == 200
        check(*await observe(mesh, "s"), "stopped")


async def test_unhealthy() -> None:
    probing = {"health_interval": 0.3, "health_timeout": 0.2, "request_timeout": 30, **SLOW_BACKOFF}
    async with running_mesh({"s": {**fixture_server("faulty_server.py"), **probing}}) as mesh:
        server = mesh.mesh.supervisor.servers["s"]
        async with mcp.Client(mesh.url("s"), mode="legacy") as client, anyio.create_task_group() as tg:

            async def freeze() -> None:
                with pytest.raises(mcp.MCPError):
                    await client.call_tool("freeze", {})

            tg.start_soon(freeze)
            await reach(server, State.UNHEALTHY)  # the frozen process ignores stdin: its stop takes 2 s
            check(*await observe(mesh, "s"), "unhealthy")
            await reach(server, State.RESTARTING)
            check(*await observe(mesh, "s"), "restarting")


async def test_restarting_and_failed() -> None:
    servers = {
        "r": {**conformance_server(), **SLOW_BACKOFF},
        "f": {"command": "/nonexistent/server", "restart": {"max_restarts": 0}},
    }
    async with running_mesh(servers) as mesh:
        server = mesh.mesh.supervisor.servers["r"]
        assert isinstance(server, SharedServer) and server.child is not None and server.child.pid is not None
        os.kill(server.child.pid, signal.SIGKILL)
        await reach(server, State.RESTARTING)
        described, consul, _ = await observe(mesh, "r")
        assert described["state"] == "restarting" and described["reason"] == "killed by SIGKILL"
        assert consul[0]["Checks"][0]["Status"] == "warning" and described["pid"] is None
        described, consul, _ = await observe(mesh, "f")
        assert described["state"] == "failed" and consul[0]["Checks"][0]["Status"] == "critical"
        assert described["last_error"].startswith("command not found or not executable: /nonexistent/server")
