"""Health from real MCP traffic: probes, states with reasons, events, /readyz."""

from __future__ import annotations

import os
import re
import signal
from typing import Any

import anyio
import httpx
import mcp
import pytest

from mcpmesh.backend import process
from mcpmesh.supervision.server import ServerBase, State
from mcpmesh.supervision.shared import SharedServer
from tests.conftest import RunningMesh, conformance_server, fixture_server, running_mesh

pytestmark = pytest.mark.anyio

FAST = {"health_interval": 0.3, "health_timeout": 0.2, "restart": {"backoff_initial": 0.05, "backoff_max": 0.1}}


async def states_until(server: ServerBase, wanted: State) -> list[str]:
    """Every state the server passes through until it reaches `wanted`."""
    seen = [server.state.value]
    with anyio.fail_after(20):
        while server.state != wanted or len(seen) == 1:
            await server.changed.wait()
            seen.append(server.state.value)
            if server.state == wanted:
                break
    return seen


async def events(mesh: RunningMesh, server: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=mesh.base_url) as http:
        return (await http.get("/v1/events", params={"server": server, "limit": 1000})).json()["events"]  # type: ignore[no-any-return]


async def test_a_live_server_that_stops_answering_becomes_unhealthy_and_is_restarted() -> None:
    servers = {"stuck": {**fixture_server("faulty_server.py"), **FAST, "request_timeout": 30}}
    async with running_mesh(servers) as mesh:
        server = mesh.mesh.supervisor.servers["stuck"]
        assert isinstance(server, SharedServer) and server.child is not None
        first_pid = server.child.pid
        async with mcp.Client(mesh.url("stuck"), mode="legacy") as client, anyio.create_task_group() as tg:

            async def hang() -> None:
                with pytest.raises(mcp.MCPError, match="exited with this request in flight"):
                    await client.call_tool("freeze", {})  # the fixture's one loop stops answering anything

            tg.start_soon(hang)
            seen = await states_until(server, State.HEALTHY)
        assert seen[:3] == ["healthy", "degraded", "unhealthy"] and "restarting" in seen
        assert server.child is not None and server.child.pid != first_pid
        kinds = [(e["kind"], e["detail"].get("state")) for e in await events(mesh, "stuck")]
        assert ("state_changed", "unhealthy") in kinds
        assert [k for k, _ in kinds].count("spawned") == 2 and ("exited", None) in kinds


async def test_a_killed_server_is_restarting_then_healthy_with_matching_events() -> None:
    async with running_mesh({"fixture": {**conformance_server(), **FAST}}) as mesh:
        server = mesh.mesh.supervisor.servers["fixture"]
        assert isinstance(server, SharedServer) and server.child is not None and server.child.pid is not None
        os.kill(server.child.pid, signal.SIGKILL)
        seen = await states_until(server, State.HEALTHY)
        assert seen == ["healthy", "restarting", "healthy"]
        log = await events(mesh, "fixture")
        exited = next(e for e in log if e["kind"] == "exited")
        assert exited["detail"]["reason"] == "killed by SIGKILL"
        assert [e["detail"]["state"] for e in log if e["kind"] == "state_changed"][-2:] == ["restarting", "healthy"]
        async with httpx.AsyncClient(base_url=mesh.base_url) as http:
            described = (await http.get("/v1/servers/fixture")).json()
        assert described["state"] == "healthy" and described["last_error"] == "killed by SIGKILL"  # kept


async def test_readyz_waits_for_every_server_not_marked_optional() -> None:
    broken = {"command": "/nonexistent/x", "restart": {"max_restarts": 0}}
    async with running_mesh({"ok": conformance_server(), "broken": broken}) as mesh, httpx.AsyncClient() as http:
        reply = await http.get(f"{mesh.base_url}/readyz")
        assert reply.status_code == 503 and reply.json()["servers"] == {"ok": "healthy", "broken": "failed"}
        assert (await http.get(f"{mesh.base_url}/healthz")).status_code == 200
    async with running_mesh({"ok": conformance_server(), "broken": {**broken, "optional": True}}) as mesh:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{mesh.base_url}/readyz")).status_code == 200


async def test_the_circuit_opens_on_timeouts_refuses_at_once_and_closes_after_a_trial() -> None:
    breaker = {"request_timeout": 0.3, "breaker_threshold": 2, "breaker_cooldown": 0.5}
    async with running_mesh({"slow": {**fixture_server("faulty_server.py"), **breaker}}) as mesh:
        server = mesh.mesh.supervisor.servers["slow"]
        assert isinstance(server, SharedServer)

        async def circuit_becomes(state: str) -> None:
            with anyio.fail_after(10):
                while server.circuit is None or server.circuit.state != state:  # noqa: ASYNC110  # no event to wait on
                    await anyio.sleep(0.02)

        async with mcp.Client(mesh.url("slow"), mode="legacy") as client:
            for _ in range(2):
                with pytest.raises(mcp.MCPError, match="did not answer tools/call within 0.3s"):
                    await client.call_tool("hang", {})
            assert server.state == State.DEGRADED and server.reason.startswith("circuit open: 2 requests in a row")
            with pytest.raises(mcp.MCPError, match="circuit open after 2 requests in a row timed out") as refused:
                await client.call_tool("echo", {"text": "x"})
            assert refused.value.code == -32053
            await circuit_becomes("half_open")
            with pytest.raises(mcp.MCPError, match="did not answer"):  # the trial fails: open again
                await client.call_tool("hang", {})
            assert server.circuit is not None and server.circuit.state == "open"
            await circuit_becomes("half_open")
            reply = await client.call_tool("echo", {"text": "back"})  # the trial is answered: closed
            assert reply.content[0].text == "back"  # type: ignore[union-attr]
            assert server.circuit.state == "closed" and server.state == State.HEALTHY
            async with httpx.AsyncClient(base_url=mesh.base_url) as http:
                described = (await http.get("/v1/servers/slow")).json()
            assert described["circuit"] == {"state": "closed", "failures": 0, "refused": 1}
        log = [e["detail"]["circuit"] for e in await events(mesh, "slow") if e["kind"] == "circuit_changed"]
        assert log == ["open", "half_open", "open", "half_open", "closed"]


async def test_a_session_mode_process_that_stops_answering_is_stopped_and_its_session_ended() -> None:
    servers = {"solo": {**fixture_server("faulty_server.py"), **FAST, "sharing": "session", "request_timeout": 30}}
    async with running_mesh(servers) as mesh:
        server = mesh.mesh.supervisor.servers["solo"]
        async with mcp.Client(mesh.url("solo"), mode="legacy") as client:
            with pytest.raises(mcp.MCPError, match="exited with this request in flight"):
                await client.call_tool("freeze", {})  # this session's own process stops answering
            with pytest.raises(mcp.MCPError):
                await client.call_tool("echo", {"text": "x"})  # its session ended with the process
        unhealthy = [e for e in await events(mesh, "solo") if e["kind"] == "process_unhealthy"]
        assert len(unhealthy) == 1 and unhealthy[0]["detail"]["reason"] == "no answer to ping within 0.2s, 2 in a row"
        assert server.state == State.HEALTHY  # one process failing is not the server failing
        async with mcp.Client(mesh.url("solo"), mode="legacy") as client:
            reply = await client.call_tool("echo", {"text": "fresh"})  # a new session, a new process
            assert reply.content[0].text == "fresh"  # type: ignore[union-attr]


async def test_a_server_that_stops_reading_its_input_fails_its_callers_and_is_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After `freeze` the server reads nothing more: 1 MiB calls fill its pipe, then the mesh's
    buffer up to the cap (2 MiB here). Every caller gets an error (nothing waits forever, the
    buffer does not grow past the cap), the probes, whose own writes wait behind the backlog, miss,
    and the server is restarted and serves again."""
    monkeypatch.setattr(process, "INPUT_BACKLOG_CAP", 2 * 1024 * 1024)
    servers = {"stuck": {**fixture_server("faulty_server.py"), **FAST, "request_timeout": 5}}
    outcomes: list[str] = []
    async with running_mesh(servers) as mesh:
        server = mesh.mesh.supervisor.servers["stuck"]
        async with mcp.Client(mesh.url("stuck"), mode="legacy") as client:
            async with anyio.create_task_group() as tg:

                async def freeze() -> None:
                    with pytest.raises(mcp.MCPError, match="exited with this request in flight"):
                        await client.call_tool("freeze", {})  # it never answers: its process is restarted

                tg.start_soon(freeze)
                await anyio.sleep(0.2)  # let freeze reach the server first

                async def big(n: int) -> None:
                    try:
                        await client.call_tool("echo", {"text": str(n) * (1024 * 1024)})
                        outcomes.append("answered")
                    except mcp.MCPError as exc:
                        outcomes.append(exc.message)

                backlogs: list[float] = []

                async def watch_backlog() -> None:  # what /metrics says meanwhile
                    async with httpx.AsyncClient(timeout=5) as http:
                        while True:
                            text = (await http.get(f"{mesh.base_url}/metrics")).text
                            found = re.search(
                                r'^mcpmesh_server_input_backlog_bytes\{server="stuck"\} (\S+)$', text, re.M
                            )
                            backlogs.append(float(found.group(1)) if found else -1.0)
                            await anyio.sleep(0.05)

                tg.start_soon(watch_backlog)
                with anyio.fail_after(60):
                    for n in range(8):
                        tg.start_soon(big, n)
                    seen = await states_until(server, State.HEALTHY)
                tg.cancel_scope.cancel()
        assert -1.0 not in backlogs and max(backlogs) > 0  # the backlog was visible, and bounded:
        assert max(backlogs) <= 2 * 1024 * 1024 + 1.1 * 1024 * 1024  # the cap, plus the one message let past it
        assert "unhealthy" in seen and server.restarts >= 1 and server.restart_reasons["unhealthy"] >= 1
        assert len(outcomes) == 8 and "answered" not in outcomes, outcomes
        assert any("is not reading its input" in o for o in outcomes), outcomes
        async with mcp.Client(mesh.url("stuck"), mode="legacy") as client:
            assert (await client.call_tool("echo", {"text": "back"})).content[0].text == "back"  # type: ignore[union-attr]
