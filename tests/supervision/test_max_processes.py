"""`max_processes` caps a session-mode server's processes: sessions and 2026-07-28 requests each need
one, and the one past the cap gets a clear 503 at once, leaves nothing registered, and is counted."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack, suppress
from typing import Any

import anyio
import httpx
import mcp
import mcp_types
import pytest

from tests.conftest import RunningMesh, everything_server, running_mesh, time_server
from tests.front.test_streamable_http import INIT, headers

pytestmark = pytest.mark.anyio

CAP = 2


def refusal_of(server: str) -> dict[str, Any]:
    """What the refused session's or request's JSON-RPC error says (its message aside)."""
    data = {"server": server, "max_processes": CAP, "setting": f"servers.{server}.max_processes"}
    return {"code": -32054, "data": data}


def mcp_error(exc: BaseException) -> mcp_types.ErrorData:
    """The MCPError in what the SDK client raised (inside its task groups' exception groups)."""
    if isinstance(exc, mcp.MCPError):
        return exc.error
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            with suppress(AssertionError):
                return mcp_error(inner)
    raise AssertionError(f"no MCPError in {exc!r}")


async def current_time(client: mcp.Client) -> str:
    reply = await client.call_tool("get_current_time", {"timezone": "UTC"})
    return str(json.loads(reply.content[0].text)["timezone"])  # type: ignore[union-attr]


async def initialize(mesh: RunningMesh, server: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(mesh.url(server), json=INIT, headers=headers(version=None))


async def test_sessions_past_max_processes_get_a_clear_503_until_one_ends() -> None:
    servers = {"time": {**time_server(), "sharing": "session", "max_processes": CAP}}
    async with running_mesh(servers) as mesh, AsyncExitStack() as stack:
        gate = mesh.mesh.supervisor.servers["time"].gate
        first = await stack.enter_async_context(mcp.Client(mesh.url("time"), mode="legacy"))
        second = await stack.enter_async_context(mcp.Client(mesh.url("time"), mode="legacy"))
        assert [await current_time(first), await current_time(second)] == ["UTC", "UTC"]

        refused = await initialize(mesh, "time")
        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert {k: body["error"][k] for k in ("code", "data")} == refusal_of("time")
        assert "max_processes = 2" in body["error"]["message"], body
        assert "mcp-session-id" not in refused.headers
        assert len(mesh.mesh.store) == 2  # nothing of the refused one is registered
        assert (gate.live, gate.claimed, gate.refused) == (2, 2, 1)  # no spare beyond the cap

        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as http:
            described = (await http.get("/v1/servers/time")).json()
            metrics = (await http.get("/metrics")).text
        assert described["processes"] == {"live": 2, "in_use": 2, "max": CAP, "refused": 1}
        assert 'mcpmesh_server_processes{server="time"} 2.0' in metrics
        assert 'mcpmesh_server_max_processes{server="time"} 2.0' in metrics
        assert 'mcpmesh_server_processes_refused_total{server="time"} 1.0' in metrics

        with pytest.raises(BaseException) as sdk_refusal:  # the SDK client is told the same
            async with mcp.Client(mesh.url("time"), mode="legacy"):
                pass
        error = mcp_error(sdk_refusal.value)
        assert (error.code, error.data) == (-32054, refusal_of("time")["data"])

        await stack.aclose()  # both clients end their sessions (DELETE): their places are free
        with anyio.fail_after(60):
            async with mcp.Client(mesh.url("time"), mode="legacy") as third:
                assert await current_time(third) == "UTC"


async def test_a_2026_request_needs_a_process_of_the_cap_too() -> None:
    servers = {"time": {**time_server(), "sharing": "session", "max_processes": CAP}}
    async with running_mesh(servers) as mesh:
        gate = mesh.mesh.supervisor.servers["time"].gate
        async with mcp.Client(mesh.url("time"), mode="2026-07-28") as stateless:
            assert await current_time(stateless) == "UTC"  # room: each request gets a process, then gives it back
            async with mcp.Client(mesh.url("time"), mode="legacy"), mcp.Client(mesh.url("time"), mode="legacy"):
                refused_before = gate.refused
                with pytest.raises(mcp.MCPError) as refusal:
                    await current_time(stateless)
                assert refusal.value.error.code == -32054, refusal.value
                assert refusal.value.error.data == refusal_of("time")["data"]
                assert gate.refused == refused_before + 1
                assert gate.claimed == 2  # the refused request holds nothing
            with anyio.fail_after(60):
                assert await current_time(stateless) == "UTC"  # the sessions ended: room again


async def test_a_2026_request_in_flight_holds_its_process_against_new_sessions() -> None:
    servers = {"everything": {**everything_server(), "sharing": "session", "max_processes": CAP}}
    async with running_mesh(servers) as mesh:
        gate = mesh.mesh.supervisor.servers["everything"].gate
        async with mcp.Client(mesh.url("everything"), mode="legacy") as session:
            assert (await session.call_tool("echo", {"message": "hi"})).content[0].text == "Echo: hi"  # type: ignore[union-attr]
            on_the_server = anyio.Event()

            async def progressed(progress: float, total: float | None, message: str | None) -> None:
                on_the_server.set()

            async def long_call() -> None:
                async with mcp.Client(mesh.url("everything"), mode="2026-07-28") as stateless:
                    await stateless.call_tool(
                        "trigger-long-running-operation",
                        {"duration": 120, "steps": 120},
                        progress_callback=progressed,
                    )

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                with anyio.fail_after(60):
                    await on_the_server.wait()
                refused = await initialize(mesh, "everything")
                assert refused.status_code == 503, refused.text
                assert {k: refused.json()["error"][k] for k in ("code", "data")} == refusal_of("everything")
                tg.cancel_scope.cancel()  # the 2026 client goes away: its request ends, its process with it

            with anyio.fail_after(60):
                while gate.claimed > 1:  # noqa: ASYNC110  # the mesh sees the closed stream in its own time
                    await anyio.sleep(0.05)
            admitted = await initialize(mesh, "everything")
            assert admitted.status_code == 200, admitted.text
