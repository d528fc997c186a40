"""Real clients (the official SDK, the inspector CLI) through the mesh to real servers."""

from __future__ import annotations

import json

import anyio
import mcp
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import conformance_server, everything_server, node_module, running_mesh, time_server

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("sharing", ["shared", "session"])
async def test_sdk_client_in_auto_mode_calls_tools_on_time_and_everything(sharing: str) -> None:
    servers = {"time": {**time_server(), "sharing": sharing}, "everything": {**everything_server(), "sharing": sharing}}
    async with running_mesh(servers) as mesh:
        async with mcp.Client(mesh.url("time")) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"get_current_time", "convert_time"} <= names
            reply = await client.call_tool("get_current_time", {"timezone": "UTC"})
            assert json.loads(reply.content[0].text)["timezone"] == "UTC"  # type: ignore[union-attr]
        async with mcp.Client(mesh.url("everything")) as client:
            reply = await client.call_tool("echo", {"message": "through the mesh"})
            assert reply.content[0].text == "Echo: through the mesh"  # type: ignore[union-attr]


@pytest.mark.parametrize("sharing", ["shared", "session"])
async def test_sdk_client_session_handshake_negotiates_and_lists(sharing: str) -> None:
    async with running_mesh({"everything": {**everything_server(), "sharing": sharing}}) as mesh:
        async with streamable_http_client(mesh.url("everything")) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.protocol_version == "2025-11-25"
                assert init.server_info.name == "mcp-servers/everything"
                tools = (await session.list_tools()).tools
                assert "echo" in {tool.name for tool in tools}
                resources = (await session.list_resources()).resources
                assert resources, "server-everything lists resources"
                read_back = await session.read_resource(resources[0].uri)
                assert read_back.contents


async def test_three_clients_at_once_on_one_shared_process_each_get_their_own_answers() -> None:
    async with running_mesh({"everything": everything_server()}) as mesh:
        results: dict[int, str] = {}

        async def client(n: int) -> None:
            async with mcp.Client(mesh.url("everything")) as c:
                for i in range(5):
                    reply = await c.call_tool("echo", {"message": f"client {n} call {i}"})
                    results[n * 10 + i] = reply.content[0].text  # type: ignore[union-attr]

        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(client, n)
        assert results == {n * 10 + i: f"Echo: client {n} call {i}" for n in range(3) for i in range(5)}
        server = mesh.mesh.supervisor.servers["everything"]
        assert server.restarts == 0


@pytest.mark.node
async def test_inspector_cli_lists_tools_through_the_mesh() -> None:
    cli = node_module("@modelcontextprotocol", "inspector", "clients", "launcher", "build", "index.js")
    async with running_mesh({"time": time_server()}) as mesh:
        proc = await anyio.run_process(
            ["node", str(cli), "--cli", mesh.url("time"), "--method", "tools/list"], check=False
        )
    assert proc.returncode == 0, proc.stderr.decode()
    names = {tool["name"] for tool in json.loads(proc.stdout)["tools"]}
    assert names == {"get_current_time", "convert_time"}


async def test_sdk_client_in_every_mode_on_every_kind_of_server_at_once() -> None:
    """auto (which picks 2026-07-28 here), 2026-07-28 and legacy clients, concurrently, on a 2026-era
    server (mcp-server-time), a handshake-era one (server-everything) and the conformance fixture."""
    servers = {"time": time_server(), "everything": everything_server(), "fixture": conformance_server()}
    calls = {
        "time": ("get_current_time", {"timezone": "UTC"}, '"timezone": "UTC"'),
        "everything": ("echo", {"message": "m"}, "Echo: m"),
        "fixture": ("test_simple_text", {}, "This is a simple text response for testing."),
    }
    seen: dict[tuple[str, str], str] = {}
    async with running_mesh(servers) as mesh:

        async def use(server: str, mode: str) -> None:
            tool, args, expected = calls[server]
            async with mcp.Client(mesh.url(server), mode=mode) as client:  # type: ignore[arg-type]
                assert tool in {t.name for t in (await client.list_tools()).tools}
                text = (await client.call_tool(tool, args)).content[0].text  # type: ignore[union-attr]
                assert expected in text
                seen[(server, mode)] = text

        async with anyio.create_task_group() as tg:
            for server in servers:
                for mode in ("auto", "2026-07-28", "legacy"):
                    tg.start_soon(use, server, mode)
        assert len(seen) == 9
        assert len(mesh.mesh.store) == 0  # every legacy session was closed by its client
