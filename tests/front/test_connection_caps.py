"""Connections are capped in all (`max_connections`) and per client address
(`max_connections_per_client`); past a cap, a reserve keeps /healthz, /readyz, /metrics and /v1
served, MCP requests there get 503, and past the reserve a connection is refused at accept.
Idle raw sockets fill the caps, from 127.0.0.2 (all of 127/8 is loopback) where the test needs
another address to stay free; real uvicorn (the harness), the real `mcp` client, real servers."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import httpx
import mcp
import pytest

from mcpmesh.front.http1.limits import OPERATOR_RESERVE
from mcpmesh.supervision.server import State
from mcpmesh.supervision.shared import SharedServer
from tests.conftest import RunningMesh, conformance_server, running_mesh, time_server
from tests.front.test_streamable_http import INIT

pytestmark = pytest.mark.anyio

OTHER = "127.0.0.2"  # the address that fills a cap
FAST = {"restart": {"backoff_initial": 0.05, "backoff_max": 0.1}}


def request(method: str, path: str, body: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Type: application/json\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


MCP_INIT = request("POST", "/servers/time/mcp", json.dumps(INIT).encode())


async def exchange(port: int, data: bytes = b"", local_host: str = OTHER) -> bytes:
    """Write `data` (maybe nothing) on a new connection; all the mesh says until it closes."""
    async with await anyio.connect_tcp("127.0.0.1", port, local_host=local_host) as stream:
        if data:
            await stream.send(data)
        reply = b""
        with anyio.fail_after(20):
            while True:
                try:
                    reply += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return reply


async def counted(mesh: RunningMesh, address: str, wanted: int) -> None:
    """Until the mesh counts `wanted` connections from `address` (accepts happen on its loop)."""
    with anyio.fail_after(20):
        while mesh.mesh.connections.by_client.get(address, 0) != wanted:  # noqa: ASYNC110  # no accept event
            await anyio.sleep(0.01)


@contextlib.asynccontextmanager
async def idle_sockets(mesh: RunningMesh, count: int, address: str = OTHER) -> AsyncIterator[None]:
    """`count` connections from `address` that never send a byte, held open for the block."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(count):
            await stack.enter_async_context(await anyio.connect_tcp("127.0.0.1", mesh.port, local_host=address))
        yield


async def a_real_client_call(mesh: RunningMesh) -> str:
    async with mcp.Client(mesh.url("time")) as client:
        reply = await client.call_tool("get_current_time", {"timezone": "UTC"})
        return str(json.loads(reply.content[0].text)["timezone"])  # type: ignore[union-attr]


async def test_one_address_past_its_cap_gets_503_for_mcp_while_healthz_and_other_clients_are_served() -> None:
    async with running_mesh({"time": time_server()}, max_connections_per_client=4) as mesh:
        async with idle_sockets(mesh, 4):
            await counted(mesh, OTHER, 4)
            refused = await exchange(mesh.port, MCP_INIT)
            assert refused.startswith(b"HTTP/1.1 503 "), refused
            error = json.loads(refused.split(b"\r\n\r\n", 1)[1])["error"]
            assert error["code"] == -32603 and "max_connections_per_client" in error["message"]
            assert (await exchange(mesh.port, request("GET", "/healthz"))).startswith(b"HTTP/1.1 200 ")
            assert await a_real_client_call(mesh) == "UTC"  # from 127.0.0.1, under its own cap
            async with idle_sockets(mesh, OPERATOR_RESERVE):  # the reserve is full too: refused at accept
                await counted(mesh, OTHER, 4 + OPERATOR_RESERVE)
                at_accept = await exchange(mesh.port)
                assert at_accept.startswith(b"HTTP/1.1 503 ") and at_accept.endswith(b"Too many connections")
        await counted(mesh, OTHER, 0)  # closing the sockets gave their places back
        served = await exchange(mesh.port, MCP_INIT)
        assert served.startswith(b"HTTP/1.1 200 "), served


async def test_past_the_global_cap_healthz_and_the_api_are_served_and_mcp_is_refused() -> None:
    async with running_mesh({"time": time_server()}, max_connections=4) as mesh:
        async with idle_sockets(mesh, 4):
            await counted(mesh, OTHER, 4)
            async with httpx.AsyncClient(base_url=mesh.base_url, timeout=20) as http:
                assert (await http.get("/healthz")).status_code == 200
                servers = await http.get("/v1/servers")
                assert servers.status_code == 200 and "time" in servers.text
                assert (await http.get("/readyz")).status_code == 200
            refused = await exchange(mesh.port, MCP_INIT, local_host="127.0.0.1")
            assert refused.startswith(b"HTTP/1.1 503 ") and b"[mesh] max_connections is reached" in refused
        await counted(mesh, OTHER, 0)
        assert await a_real_client_call(mesh) == "UTC"
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=20) as http:
            metrics = (await http.get("/metrics")).text
        assert 'mcpmesh_http_refused_total{reason="connections"} 1.0' in metrics


async def test_a_backend_that_crashes_while_the_caps_are_hit_respawns() -> None:
    """With few descriptors left (the soft limit lowered for the test), sockets past the caps are
    closed at accept instead of each holding one: the crashed server's pipes still find some."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with running_mesh({"time": {**time_server(), **FAST}}, max_connections=1) as mesh:
        server = mesh.mesh.supervisor.servers["time"]
        assert isinstance(server, SharedServer) and server.child is not None
        first_pid = server.child.pid
        in_use = len(os.listdir("/proc/self/fd"))
        held = 1 + OPERATOR_RESERVE
        # Room for the clients' sockets and the mesh's `held`, and 20 more for the respawn; without
        # the caps, the mesh's end of the 18 extra sockets takes 18 of those 20.
        sockets = held + 18
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + sockets + held + 20, hard))
        try:
            async with idle_sockets(mesh, sockets):
                with anyio.fail_after(20):  # every socket accepted, and held or refused
                    limits = mesh.mesh.connections
                    while limits.open + limits.refused["connections"] < sockets:  # noqa: ASYNC110  # no accept event
                        await anyio.sleep(0.01)
                assert mesh.mesh.connections.open == held
                os.kill(first_pid, signal.SIGKILL)
                with anyio.fail_after(30):
                    while not (server.state == State.HEALTHY and server.child and server.child.pid != first_pid):
                        await server.changed.wait()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert server.restart_reasons == {"exited": 1}
        assert await a_real_client_call(mesh) == "UTC"


async def test_an_open_sse_stream_counts_against_its_clients_cap() -> None:
    async with running_mesh({"conf": conformance_server()}, max_connections_per_client=1) as mesh:
        async with await anyio.connect_tcp("127.0.0.1", mesh.port, local_host=OTHER) as stream:
            await stream.send(b"GET /servers/conf/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
            head = b""
            with anyio.fail_after(20):
                while b"event: endpoint" not in head:
                    head += await stream.receive()
            assert head.startswith(b"HTTP/1.1 200 "), head
            post = request("POST", "/servers/conf/mcp", json.dumps(INIT).encode())
            refused = await exchange(mesh.port, post)
            assert refused.startswith(b"HTTP/1.1 503 ") and b"max_connections_per_client" in refused
        await counted(mesh, OTHER, 0)  # the stream ended with its connection
        assert (await exchange(mesh.port, post)).startswith(b"HTTP/1.1 200 ")
