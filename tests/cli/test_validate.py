"""`mcpmesh validate` against real meshes: green when what the registry claims answers, and red,
naming the server and the check, for each gap the issue lists."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp
import pytest

from mcpmesh.cli.validate import Check, Validator
from mcpmesh.supervision.server import State
from mcpmesh.supervision.shared import SharedServer
from tests.conftest import RunningMesh, conformance_server, fixture_server, running_mesh, time_server

pytestmark = pytest.mark.anyio

PORTS = "23400-23409"


def request(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def failures(checks: list[Check]) -> list[tuple[str, str]]:
    return [(c.server, c.check) for c in checks if not c.ok]


async def validate(mesh: RunningMesh) -> list[Check]:
    return await Validator(mesh.base_url).run()


async def test_a_healthy_mesh_passes_every_check_through_every_url(tmp_path: Path) -> None:
    servers: dict[str, dict[str, Any]] = {
        "fixture": {**conformance_server(), "dedicated_port": True},
        "time": time_server(),
        "solo": {**conformance_server(), "sharing": "session"},
    }
    async with running_mesh(servers, state_dir=str(tmp_path), ports=PORTS) as mesh:
        with anyio.fail_after(10):
            while len([s for s in servers if "tools" in mesh.mesh.registry.listings(s)]) < 2:  # noqa: ASYNC110  # read in the background
                await anyio.sleep(0.05)
        command = [sys.executable, "-m", "mcpmesh", "validate", "--url", mesh.base_url, "--json"]
        done = await anyio.to_thread.run_sync(lambda: subprocess.run(command, capture_output=True, text=True))
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"] is True, done.stdout
    seen = {(c["server"], c["check"], c["target"]) for c in report["checks"]}
    dedicated = "http://127.0.0.1:23400"
    for target in (f"{mesh.base_url}/servers/fixture/mcp", f"{dedicated}/mcp", f"{dedicated}/sse"):
        assert {("fixture", step, target) for step in ("handshake", "tools", "ping")} <= seen
    for target in (f"{mesh.base_url}/servers/fixture/mcp", f"{dedicated}/mcp"):  # 2026-07-28 has no SSE form
        assert {("fixture", step, target) for step in ("discover", "tools (2026-07-28)")} <= seen
    assert ("fixture", "port", dedicated) in seen
    assert ("time", "tools", f"{mesh.base_url}/servers/time/mcp") in seen
    tools = next(c for c in report["checks"] if c["server"] == "time" and c["check"] == "tools")
    assert tools["detail"] == "2 tools, as the registry lists"


async def test_a_dead_process_fails_naming_the_server() -> None:
    servers = {"dead": {**fixture_server("faulty_server.py"), "restart": {"max_restarts": 0}}, "ok": time_server()}
    async with running_mesh(servers) as mesh:
        server = mesh.mesh.supervisor.servers["dead"]
        assert isinstance(server, SharedServer) and server.child is not None and server.child.pid is not None
        os.kill(server.child.pid, signal.SIGKILL)
        with anyio.fail_after(10):
            while server.state != State.FAILED:
                await server.changed.wait()
        checks = await validate(mesh)
    assert failures(checks)[:2] == [("dead", "state"), ("dead", "handshake")]
    assert {server for server, _ in failures(checks)} == {"dead"}
    handshake = next(c for c in checks if c.server == "dead" and c.check == "handshake")
    assert "is unavailable" in handshake.detail and "killed by SIGKILL" in handshake.detail


async def test_a_live_process_answering_garbage_fails_the_tools_check() -> None:
    servers = {"babbler": {**fixture_server("faulty_server.py"), "request_timeout": 1}}
    async with running_mesh(servers) as mesh:
        async with httpx.AsyncClient(timeout=10) as http:  # raw: the SDK would list tools after the call
            accept = {"Accept": "application/json, text/event-stream"}
            init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
            opened = await http.post(mesh.url("babbler"), json=request(1, "initialize", init), headers=accept)
            session = {**accept, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
            babble = request(2, "tools/call", {"name": "babble", "arguments": {}})
            reply = await http.post(mesh.url("babbler"), json=babble, headers=session)
            assert "from now on, garbage" in reply.text  # and from now on every answer is a line of HTML
        checks = await validate(mesh)
    assert ("babbler", "tools") in failures(checks)
    tools = next(c for c in checks if c.server == "babbler" and c.check == "tools")
    assert "did not answer tools/list within 1s" in tools.detail


async def test_a_dedicated_port_nothing_listens_on_fails_the_port_check(tmp_path: Path) -> None:
    servers = {"fixture": {**conformance_server(), "dedicated_port": True}}
    async with running_mesh(servers, state_dir=str(tmp_path), ports=PORTS) as mesh:
        mesh.mesh.dedicated["fixture"].should_exit = True  # its listener is gone; the registry still assigns the port
        with anyio.fail_after(10):
            while _listening(23400):  # noqa: ASYNC110  # no event tells when a socket closed
                await anyio.sleep(0.05)
        checks = await validate(mesh)
    assert ("fixture", "port") in failures(checks)
    assert ("fixture", "handshake") in failures(checks)  # through the advertised dedicated URL
    port = next(c for c in checks if c.check == "port")
    assert port.detail.startswith("nothing serves pool port 23400")
    main = [c for c in checks if c.target.endswith("/servers/fixture/mcp")]
    assert main and all(c.ok for c in main)  # the main port still serves it


async def test_a_tool_list_the_registry_does_not_match_fails_the_tools_check() -> None:
    servers = {"plugins": {**fixture_server("faulty_server.py"), "health_interval": 3600}}
    async with running_mesh(servers) as mesh:
        with anyio.fail_after(10):
            while "tools" not in mesh.mesh.registry.listings("plugins"):  # noqa: ASYNC110  # read in the background
                await anyio.sleep(0.05)
        async with mcp.Client(mesh.url("plugins"), mode="legacy") as client:
            await client.call_tool("add_tool", {"name": "late_plugin"})  # unannounced, and no probe comes
        checks = await validate(mesh)
    # Through /mcp in both eras, and /sse.
    assert failures(checks) == [("plugins", "tools"), ("plugins", "tools (2026-07-28)"), ("plugins", "tools")]
    tools = next(c for c in checks if c.check == "tools")
    assert tools.detail == "tools differ from the registry: not served [], not registered ['late_plugin']"


async def test_the_command_prints_a_line_per_check_and_exits_non_zero_on_a_gap() -> None:
    servers = {"dead": {"command": "/nonexistent/server", "restart": {"max_restarts": 0}}}
    async with running_mesh(servers) as mesh:
        command = [sys.executable, "-m", "mcpmesh", "validate", "--url", mesh.base_url]
        done = await anyio.to_thread.run_sync(lambda: subprocess.run(command, capture_output=True, text=True))
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert lines[0].startswith(f"ok   - mesh {mesh.base_url}: mesh ")
    assert lines[1].startswith("FAIL dead state registry: failed (")
    assert lines[-1].endswith("failed") and lines[-1].startswith(f"{len(lines) - 1} checks, ")


async def test_a_stopped_server_fails_unless_the_operator_allows_it() -> None:
    servers = {"time": time_server(), "spare": time_server(), "off": {**time_server(), "enabled": False}}
    async with running_mesh(servers) as mesh:
        async with httpx.AsyncClient(base_url=mesh.base_url) as http:
            stop = await http.post("/v1/servers/spare/stop", headers={"Content-Type": "application/json"})
            assert stop.status_code == 200, stop.text
        strict = await Validator(mesh.base_url).run()
        allowing = await Validator(mesh.base_url, allow_stopped=True).run()
    assert failures(strict) == [("spare", "state")]  # "off" is switched off in the config: no gap
    assert "--allow-stopped accepts it" in next(c.detail for c in strict if c.server == "spare")
    assert failures(allowing) == []
    modern = [c for c in allowing if c.server == "time" and c.check == "discover"]
    assert modern and "protocol 2026-07-28" in modern[0].detail


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_a_mesh_answering_only_the_handshake_era_fails_the_2026_checks() -> None:
    async with running_mesh({"time": time_server()}, stateless_requests=False) as mesh:
        checks = await validate(mesh)
    assert failures(checks) == [("time", "discover")]  # /mcp in 2026-07-28; the handshake passes
    assert all(c.ok for c in checks if c.check == "handshake")


async def test_a_sigstopped_server_fails_its_checks() -> None:
    # No probe comes to notice it (health_interval), so only validate's own traffic can tell.
    stopped = {**time_server(), "health_interval": 3600, "request_timeout": 2}
    async with running_mesh({"frozen": stopped}) as mesh:
        pid = mesh.mesh.supervisor.servers["frozen"].live_process.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            checks = await validate(mesh)
        finally:
            os.kill(pid, signal.SIGCONT)
    failed = failures(checks)
    assert ("frozen", "tools") in failed and ("frozen", "tools (2026-07-28)") in failed, checks
