"""Every client era and transport at once, in front of the same servers (issue 3's check): the SDK
client in auto, 2026-07-28 and legacy mode, the SDK's sse_client, the inspector CLI over SSE, and
mcp-remote as a stdio bridge; on a 2026-era server, a handshake-era one and the conformance fixture."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import anyio
import mcp
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client

from tests.conftest import conformance_server, everything_server, node_module, running_mesh, time_server

pytestmark = [pytest.mark.anyio, pytest.mark.node]

SERVERS = {"time": time_server, "everything": everything_server, "fixture": conformance_server}
CALLS: dict[str, tuple[str, dict[str, Any], str]] = {
    "time": ("get_current_time", {"timezone": "UTC"}, '"timezone": "UTC"'),
    "everything": ("echo", {"message": "m"}, "Echo: m"),
    "fixture": ("test_simple_text", {}, "This is a simple text response for testing."),
}


async def via_sdk(url: str, server: str, mode: str) -> str:
    tool, args, _ = CALLS[server]
    async with mcp.Client(url, mode=mode) as client:  # type: ignore[arg-type]
        assert tool in {t.name for t in (await client.list_tools()).tools}
        return (await client.call_tool(tool, args)).content[0].text  # type: ignore[union-attr, no-any-return]


async def via_session(read: Any, write: Any, server: str) -> str:
    tool, args, _ = CALLS[server]
    async with ClientSession(read, write) as session:
        await session.initialize()
        assert tool in {t.name for t in (await session.list_tools()).tools}
        return (await session.call_tool(tool, args)).content[0].text  # type: ignore[union-attr, no-any-return]


async def via_sse(base: str, server: str) -> str:
    async with sse_client(f"{base}/servers/{server}/sse") as (read, write):
        return await via_session(read, write, server)


async def via_mcp_remote(url: str, server: str, home: Path) -> str:
    proxy = node_module("mcp-remote", "dist", "proxy.js")
    node = shutil.which("node")
    assert node
    params = StdioServerParameters(
        command=node,
        args=[str(proxy), url, "--transport", "http-only"],
        env={"HOME": str(home), "PATH": os.environ["PATH"]},  # its token store goes to a scratch HOME
    )
    with open(os.devnull, "w") as quiet:  # noqa: ASYNC230  # /dev/null never blocks; mcp-remote narrates on stderr
        async with stdio_client(params, errlog=quiet) as (read, write):
            return await via_session(read, write, server)


async def via_inspector_sse(base: str, server: str) -> str:
    cli = node_module("@modelcontextprotocol", "inspector", "clients", "launcher", "build", "index.js")
    url = f"{base}/servers/{server}/sse"
    proc = await anyio.run_process(
        ["node", str(cli), "--cli", url, "--transport", "sse", "--method", "tools/list"], check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return ",".join(sorted(tool["name"] for tool in json.loads(proc.stdout)["tools"]))


async def test_every_client_era_and_transport_at_once_on_every_kind_of_server(tmp_path: Path) -> None:
    servers = {name: make() for name, make in SERVERS.items()}
    results: dict[tuple[str, str], str] = {}
    async with running_mesh(servers) as mesh:

        async def run(server: str, client: str) -> None:
            url = mesh.url(server)
            if client.startswith("sdk-"):
                results[(server, client)] = await via_sdk(url, server, client[4:])
            elif client == "sse_client":
                results[(server, client)] = await via_sse(mesh.base_url, server)
            elif client == "mcp-remote":
                results[(server, client)] = await via_mcp_remote(url, server, tmp_path)
            else:
                results[(server, client)] = await via_inspector_sse(mesh.base_url, server)

        clients = ["sdk-auto", "sdk-2026-07-28", "sdk-legacy", "sse_client", "mcp-remote", "inspector-sse"]
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for server in SERVERS:
                    for client in clients:
                        tg.start_soon(run, server, client)
    assert len(results) == len(SERVERS) * len(clients)
    for (server, client), text in results.items():
        tool, _, expected = CALLS[server]
        if client == "inspector-sse":
            assert tool in text.split(","), (server, client, text)
        else:
            assert expected in text, (server, client, text)
