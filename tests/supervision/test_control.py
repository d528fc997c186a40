"""Operator control: POST /v1/servers/{name}/restart|stop|start and `mcpmesh restart|stop|start`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp
import pytest

from mcpmesh.supervision.per_session import PerSessionServer
from mcpmesh.supervision.server import ServerBase, State
from mcpmesh.supervision.shared import SharedServer
from tests.conftest import RunningMesh, conformance_server, running_mesh

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
FAST = {"restart": {"backoff_initial": 0.05, "backoff_max": 0.1}}


async def post(mesh: RunningMesh, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=30) as http:
        return await http.post(path)


async def settle(server: ServerBase, wanted: State) -> None:
    with anyio.fail_after(20):
        while server.state != wanted:
            await server.changed.wait()


async def kinds(mesh: RunningMesh, server: str) -> list[str]:
    async with httpx.AsyncClient(base_url=mesh.base_url) as http:
        events = (await http.get("/v1/events", params={"server": server, "limit": 1000})).json()["events"]
    return [e["kind"] for e in events]


async def test_restart_gives_a_shared_server_a_new_process_and_keeps_its_sessions() -> None:
    async with running_mesh({"fixture": {**conformance_server(), **FAST}}) as mesh:
        server = mesh.mesh.supervisor.servers["fixture"]
        assert isinstance(server, SharedServer) and server.child is not None
        first_pid = server.child.pid
        async with mcp.Client(mesh.url("fixture"), mode="legacy") as client:
            await client.call_tool("test_simple_text", {})
            reply = await post(mesh, "/v1/servers/fixture/restart")
            assert reply.status_code == 202, reply.text
            body = reply.json()
            assert body["action"] == "restart" and body["changed"] is True
            await settle(server, State.HEALTHY)
            assert server.child is not None and server.child.pid != first_pid
            assert server.restarts == 1 and server.restart_reasons == {"requested": 1}
            again = await client.call_tool("test_simple_text", {})  # the same session, on the new process
            assert again.content[0].text == "This is a simple text response for testing."  # type: ignore[union-attr]
        log = await kinds(mesh, "fixture")
        assert log.count("spawned") == 2 and "restart_requested" in log


async def test_stop_keeps_a_server_stopped_and_start_brings_it_back() -> None:
    async with running_mesh({"fixture": {**conformance_server(), **FAST}, "other": conformance_server()}) as mesh:
        server = mesh.mesh.supervisor.servers["fixture"]
        assert isinstance(server, SharedServer)
        async with mcp.Client(mesh.url("fixture"), mode="legacy") as client:
            stopped = await post(mesh, "/v1/servers/fixture/stop")
            assert stopped.status_code == 200, stopped.text
            described = stopped.json()["server"]
            assert described["state"] == "stopped" and described["pid"] is None
            assert described["reason"].startswith("stopped by api")
            with pytest.raises(mcp.MCPError):  # its session was ended with the server
                await client.call_tool("test_simple_text", {})
        assert server.child is None and server.state == State.STOPPED
        async with httpx.AsyncClient(base_url=mesh.base_url) as http:
            late = await http.post("/servers/fixture/mcp", json=INITIALIZE, headers=MCP_HEADERS)
            assert late.json()["error"]["message"].startswith("server 'fixture' is unavailable: stopped by api")
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["servers"] == {"fixture": "stopped", "other": "healthy"}
        again = await post(mesh, "/v1/servers/fixture/stop")
        assert again.status_code == 200 and again.json()["changed"] is False
        started = await post(mesh, "/v1/servers/fixture/start")
        assert started.status_code == 202 and started.json()["changed"] is True
        await settle(server, State.HEALTHY)
        async with mcp.Client(mesh.url("fixture"), mode="legacy") as client:
            assert (await client.list_tools()).tools
        running = await post(mesh, "/v1/servers/fixture/start")
        assert running.status_code == 200 and running.json()["changed"] is False
        log = await kinds(mesh, "fixture")  # the no-op stop and start are not recorded
        assert log.count("stop_requested") == 1 and log.count("start_requested") == 1
        assert mesh.mesh.supervisor.servers["other"].state == State.HEALTHY  # never touched


async def test_a_session_mode_server_stops_and_starts_with_its_processes() -> None:
    async with running_mesh({"solo": {**conformance_server(), "sharing": "session"}}) as mesh:
        server = mesh.mesh.supervisor.servers["solo"]
        assert isinstance(server, PerSessionServer)
        async with mcp.Client(mesh.url("solo"), mode="legacy") as client:
            await client.list_tools()
            assert len(server.processes) == 2  # the session's own, and the warm spare
            assert (await post(mesh, "/v1/servers/solo/stop")).status_code == 200
            assert not server.processes
            with pytest.raises(mcp.MCPError):
                await client.list_tools()
        assert (await post(mesh, "/v1/servers/solo/start")).status_code == 202
        await settle(server, State.HEALTHY)
        async with mcp.Client(mesh.url("solo"), mode="legacy") as client:
            assert (await client.list_tools()).tools


async def test_bad_control_requests_get_clear_json_errors(tmp_path: Path) -> None:
    servers: dict[str, dict[str, Any]] = {
        "first": {**conformance_server(), "dedicated_port": True},
        "second": {**conformance_server(), "dedicated_port": True},
    }
    async with running_mesh(servers, state_dir=str(tmp_path), ports="23310-23310") as mesh:
        missing = await post(mesh, "/v1/servers/nope/restart")
        assert missing.status_code == 404 and missing.json() == {
            "error": "not_found",
            "message": "no server named 'nope'",
        }
        blocked = await post(mesh, "/v1/servers/second/start")  # the one-port range went to "first"
        assert blocked.status_code == 409 and blocked.json()["message"] == (
            "server 'second' cannot run: no free port for 'second' in range 23310-23310 (1 ports): 23310: first (held)"
        )
        async with httpx.AsyncClient(base_url=mesh.base_url) as http:
            wrong = await http.get("/v1/servers/first/restart")
            assert wrong.status_code == 405


async def test_the_restart_command_asks_the_running_mesh() -> None:
    async with running_mesh({"fixture": {**conformance_server(), **FAST}}) as mesh:
        server = mesh.mesh.supervisor.servers["fixture"]
        command = [sys.executable, "-m", "mcpmesh", "restart", "fixture", "--url", mesh.base_url]
        done = await anyio.to_thread.run_sync(lambda: subprocess.run(command, capture_output=True, text=True))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("restart fixture: done; now starting")
        await settle(server, State.HEALTHY)
        unknown = [sys.executable, "-m", "mcpmesh", "stop", "nope", "--url", mesh.base_url]
        refused = await anyio.to_thread.run_sync(lambda: subprocess.run(unknown, capture_output=True, text=True))
        assert refused.returncode == 1 and "no server named 'nope'" in refused.stdout


async def test_a_page_on_another_loopback_port_cannot_change_the_mesh_but_the_mesh_own_page_can() -> None:
    """A form on http://localhost:3000 POSTs with no preflight: loopback origins may call the MCP
    endpoints, not stop servers. The mesh's own page, a configured origin and the CLI (no Origin) may."""
    async with running_mesh({"conf": conformance_server()}, allowed_origins=["https://ops.example.com"]) as mesh:
        server = mesh.mesh.supervisor.servers["conf"]
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=30) as http:
            for origin in ("http://localhost:3000", "http://127.0.0.1:8080", f"http://localhost:{mesh.port}"):
                refused = await http.post("/v1/servers/conf/stop", headers={**form, "Origin": origin}, content=b"x=1")
                assert refused.status_code == 403, (origin, refused.text)
                assert "may not change the mesh" in refused.json()["message"]
            assert server.state == State.HEALTHY
            # The MCP endpoint still takes that page's requests (browser clients on localhost).
            init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "page", "version": "1"}}
            mcp_headers = {"Accept": "application/json, text/event-stream", "Origin": "http://localhost:3000"}
            opened = await http.post(
                "/servers/conf/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init},
                headers=mcp_headers,
            )
            assert opened.status_code == 200, opened.text
            own = {"Origin": f"http://127.0.0.1:{mesh.port}"}
            assert (await http.post("/v1/servers/conf/restart", headers=own)).status_code == 202
            ops = {"Origin": "https://ops.example.com"}
            assert (await http.post("/v1/servers/conf/restart", headers=ops)).status_code == 202
            assert (await http.post("/v1/servers/conf/stop")).status_code == 200  # the CLI sends no Origin
        assert server.state == State.STOPPED


async def test_a_server_disabled_in_the_config_is_listed_stopped_never_spawned_and_starts_on_request() -> None:
    servers = {"off": {**conformance_server(), "enabled": False}, "on": conformance_server()}
    async with running_mesh(servers) as mesh:
        server = mesh.mesh.supervisor.servers["off"]
        assert server.state == State.STOPPED and server.reason == "disabled in the config (enabled = false)"
        assert "spawned" not in await kinds(mesh, "off")
        async with httpx.AsyncClient(base_url=mesh.base_url) as http:
            listed = (await http.get("/v1/servers/off")).json()
            assert (listed["state"], listed["pid"]) == ("stopped", None)
            ready = await http.get("/readyz")  # nothing waits for a server switched off
            assert ready.status_code == 200 and ready.json()["servers"] == {"off": "stopped", "on": "healthy"}
        started = await post(mesh, "/v1/servers/off/start")
        assert started.status_code == 202, started.text
        await settle(server, State.HEALTHY)
        assert (await kinds(mesh, "off")).count("spawned") == 1
