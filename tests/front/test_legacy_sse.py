"""The 2024-11-05 HTTP+SSE transport at /servers/<name>/sse, with real clients and over raw HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import mcp_types as types
import orjson
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client

from mcpmesh.front import legacy_sse
from tests.conftest import RunningMesh, conformance_server, everything_server, node_module, running_mesh

pytestmark = pytest.mark.anyio


def sse_url(mesh: RunningMesh, server: str) -> str:
    return f"{mesh.base_url}/servers/{server}/sse"


async def answer_sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    prompt = params.messages[0].content.text  # type: ignore[union-attr]
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"sampled {prompt}"), model="test"
    )


@pytest.mark.parametrize("sharing", ["shared", "session"])
async def test_sdk_sse_client_initializes_lists_calls_and_answers_sampling(sharing: str) -> None:
    servers = {"fixture": {**conformance_server(), "sharing": sharing}, "everything": everything_server()}
    async with running_mesh(servers) as mesh:
        with anyio.fail_after(30):
            async with sse_client(sse_url(mesh, "fixture")) as (read, write):
                async with ClientSession(read, write, sampling_callback=answer_sampling) as session:
                    init = await session.initialize()
                    assert init.server_info.name == "mcpmesh-conformance-fixture"
                    tools = {t.name for t in (await session.list_tools()).tools}
                    assert "test_simple_text" in tools
                    reply = await session.call_tool("test_sampling", {"prompt": "hello"})
                    assert reply.content[0].text == "LLM response: sampled hello"  # type: ignore[union-attr]
            async with sse_client(sse_url(mesh, "everything")) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    echo = await session.call_tool("echo", {"message": "over sse"})
                    assert echo.content[0].text == "Echo: over sse"  # type: ignore[union-attr]
            with anyio.fail_after(10):
                while len(mesh.mesh.store):  # noqa: ASYNC110  # closing the stream ends the session
                    await anyio.sleep(0.02)


@pytest.mark.node
async def test_inspector_cli_over_sse_lists_tools() -> None:
    cli = node_module("@modelcontextprotocol", "inspector", "clients", "launcher", "build", "index.js")
    async with running_mesh({"fixture": conformance_server()}) as mesh:
        proc = await anyio.run_process(
            ["node", str(cli), "--cli", sse_url(mesh, "fixture"), "--transport", "sse", "--method", "tools/list"],
            check=False,
        )
    assert proc.returncode == 0, proc.stderr.decode()
    names = {tool["name"] for tool in json.loads(proc.stdout)["tools"]}
    assert {"test_simple_text", "test_sampling"} <= names


@pytest.fixture
async def mesh() -> AsyncIterator[RunningMesh]:
    async with running_mesh({"fixture": conformance_server(), "other": conformance_server()}) as m:
        yield m


async def open_stream(http: httpx.AsyncClient, url: str) -> tuple[httpx.Response, AsyncIterator[str], str]:
    response = await http.send(http.build_request("GET", url, headers={"Accept": "text/event-stream"}), stream=True)
    lines = response.aiter_lines()
    assert await anext(lines) == "event: endpoint"
    data = await anext(lines)
    assert data.startswith("data: ")
    return response, lines, data[6:]


async def next_message(lines: AsyncIterator[str]) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data: "):
            return orjson.loads(line[6:])  # type: ignore[no-any-return]
    raise AssertionError("stream ended")


async def test_endpoint_event_names_an_unguessable_per_connection_uri(mesh: RunningMesh) -> None:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as http:
        first, _, uri_a = await open_stream(http, sse_url(mesh, "fixture"))
        second, _, uri_b = await open_stream(http, sse_url(mesh, "fixture"))
        assert uri_a.startswith("/servers/fixture/messages?session_id=") and uri_a != uri_b
        assert len(uri_a.split("=", 1)[1]) >= 32
        assert first.headers["x-accel-buffering"] == "no"
        await first.aclose()
        await second.aclose()


async def test_posts_answer_202_and_replies_arrive_on_the_stream_only(mesh: RunningMesh) -> None:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as http:
        stream, lines, uri = await open_stream(http, sse_url(mesh, "fixture"))
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2024-11-05",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        }
        posted = await http.post(uri, json=init)
        assert posted.status_code == 202
        with anyio.fail_after(10):
            reply = await next_message(lines)
            assert reply["id"] == 1 and reply["result"]["protocolVersion"] == "2024-11-05"
            await http.post(uri, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert (await http.post(uri, json={"jsonrpc": "2.0", "id": "x", "method": "tools/list"})).status_code == 202
            listing = await next_message(lines)
            assert listing["id"] == "x" and listing["result"]["tools"]
        await stream.aclose()


async def test_unknown_missing_or_foreign_connection_ids_are_refused(mesh: RunningMesh) -> None:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as http:
        stream, _, uri = await open_stream(http, sse_url(mesh, "fixture"))
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        assert (await http.post("/servers/fixture/messages?session_id=nope", json=ping)).status_code == 404
        assert (await http.post("/servers/fixture/messages", json=ping)).status_code == 400
        other = uri.replace("/servers/fixture/", "/servers/other/")  # a real id, another server's URI
        assert (await http.post(other, json=ping)).status_code == 404
        assert (await http.post(uri, content=b"{", headers={"Content-Type": "application/json"})).status_code == 400
        assert (await http.post(uri, content=b"x", headers={"Content-Type": "text/plain"})).status_code == 415
        assert (await http.post(uri, json={"pad": "x" * (5 * 1024 * 1024)})).status_code == 413
        await stream.aclose()


async def test_foreign_origin_and_host_are_refused_on_the_sse_routes(mesh: RunningMesh) -> None:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as http:
        evil = await http.get(sse_url(mesh, "fixture"), headers={"Origin": "http://evil.example.com"})
        assert evil.status_code == 403
        rebinding = await http.get(sse_url(mesh, "fixture"), headers={"Host": "evil.example.com"})
        assert rebinding.status_code == 421


async def test_the_transport_can_be_turned_off() -> None:
    async with running_mesh({"fixture": conformance_server()}, legacy_sse=False) as mesh:
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(sse_url(mesh, "fixture"))).status_code == 404


async def test_a_stream_that_never_initializes_is_ended_and_gives_its_place_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streams count against max_sessions (1 here): one whose client never sends initialize is
    ended after UNINITIALIZED_TIMEOUT (0.3 s here), so such streams cannot lock every legacy client
    out; an initialized one then takes the place and keeps it past the deadline."""
    monkeypatch.setattr(legacy_sse, "UNINITIALIZED_TIMEOUT", 0.3)
    async with running_mesh({"fixture": conformance_server()}, max_sessions=1) as mesh:
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=10) as http:
            with anyio.fail_after(10):
                idle, lines, _ = await open_stream(http, sse_url(mesh, "fixture"))
                refused = await http.get(sse_url(mesh, "fixture"), headers={"Accept": "text/event-stream"})
                assert refused.status_code == 503  # the idle stream holds the one place
                async for _ in lines:  # it ends: nothing but keep-alives came on it
                    pass
                await idle.aclose()
                async with sse_client(sse_url(mesh, "fixture")) as (read, write), ClientSession(read, write) as s:
                    await s.initialize()
                    await anyio.sleep(0.6)  # past the deadline: an initialized stream is not ended
                    assert (await s.list_tools()).tools
