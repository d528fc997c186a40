"""Remote (`url`) servers: mcpmesh in front of another mcpmesh on loopback, over Streamable HTTP in
both eras and over HTTP+SSE; reconnection after the upstream goes away and comes back on its port;
configured headers (secrets from the environment) reach the upstream, the client's own never do."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import httpx
import mcp
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent
from starlette.types import ASGIApp, Receive, Scope, Send

from mcpmesh.backend.response_reader import sse_messages
from mcpmesh.protocol.requests import encode_header_value
from mcpmesh.supervision.server import ServerBase, State
from tests.conftest import RunningMesh, conformance_server, fixture_server, running_mesh

pytestmark = pytest.mark.anyio

BACKEND_EXITED, BACKEND_UNAVAILABLE = -32050, -32052
RECONNECT_FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "max_restarts": 1000, "window": 60}
GIVE_UP_FAST = {"backoff_initial": 0.01, "backoff_max": 0.02, "max_restarts": 1, "window": 60}
SIMPLE_TEXT = "This is a simple text response for testing."
SECRET = "upstream-secret-5f0c"
CLIENT_TOKEN = "client-token-9d2e"
UPSTREAMS = {
    # The upstream mesh answers 2026-07-28 requests for a shared server (stateless POSTs) and sends
    # the front to the initialize handshake (a session id, a GET stream) for a session-mode one.
    "2026-07-28": ({"sharing": "shared"}, "streamable-http"),
    "handshake": ({"sharing": "session"}, "streamable-http"),  # on an upstream with stateless_requests = false
    "sse": ({"sharing": "shared"}, "sse"),
}
# Mesh settings of each kind of upstream: the handshake-only one does not answer 2026-07-28 requests.
UPSTREAM_MESH: dict[str, dict[str, Any]] = {"handshake": {"stateless_requests": False}}


def remote(upstream: RunningMesh, transport: str, **settings: Any) -> dict[str, Any]:
    """A front server table for server `x` of the upstream mesh. Over Streamable HTTP the front
    prefers 2026-07-28, the stateless path these tests exercise, unless `prefer_era` says otherwise
    (an upstream that refuses 2026-07-28 requests still gets the handshake)."""
    if transport == "sse":
        return {"url": f"{upstream.base_url}/servers/x/sse", "transport": "sse", **settings}
    return {"url": upstream.url("x"), "prefer_era": "2026-07-28", **settings}


def text_of(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


async def wait_for_state(server: ServerBase, state: State) -> None:
    while server.state != state:
        await server.changed.wait()


async def start_mesh(
    tg: anyio.abc.TaskGroup, servers: dict[str, dict[str, Any]], **mesh_settings: Any
) -> tuple[RunningMesh, Callable[[], Awaitable[None]]]:
    """A mesh run by a task of its own, and the function that stops it while the rest runs on."""
    stop, stopped = anyio.Event(), anyio.Event()

    async def run(*, task_status: anyio.abc.TaskStatus[RunningMesh]) -> None:
        try:
            async with running_mesh(servers, **mesh_settings) as mesh:
                task_status.started(mesh)
                await stop.wait()
        finally:
            stopped.set()

    async def halt() -> None:
        stop.set()
        await stopped.wait()

    return await tg.start(run), halt


async def use(url: str, mode: str) -> list[float]:
    """The client workflow: list tools, call one, call one that reports progress."""
    async with mcp.Client(url, mode=mode) as client:  # type: ignore[arg-type]
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"test_simple_text", "test_tool_with_progress"} <= names
        assert text_of(await client.call_tool("test_simple_text", {})) == SIMPLE_TEXT
        progress: list[float] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        reply = await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
        assert text_of(reply).startswith("Progress tool finished")
        return progress


# -- a mesh in front of a mesh ---------------------------------------------------------------------
@pytest.mark.parametrize("front_sharing", ["shared", "session"])
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_sdk_clients_list_call_and_get_progress_through_a_mesh_in_front_of_a_mesh(
    upstream: str, front_sharing: str
) -> None:
    settings, transport = UPSTREAMS[upstream]
    async with running_mesh({"x": {**conformance_server(), **settings}}, **UPSTREAM_MESH.get(upstream, {})) as up:
        async with running_mesh({"x": remote(up, transport, sharing=front_sharing)}) as front:
            server = front.mesh.supervisor.servers["x"]
            assert server.state == State.HEALTHY, server.reason
            with anyio.fail_after(60):
                for mode in ("legacy", "auto"):
                    assert await use(front.url("x"), mode) == [0, 50, 100]
            if front_sharing == "shared":
                era = "modern" if upstream == "2026-07-28" else "legacy"
                assert server.reason == f"initialized ({era} era)"


async def test_a_dual_era_upstream_is_spoken_to_in_the_handshake_era_by_default() -> None:
    """The default `prefer_era`: the front initializes a session on an upstream that speaks both."""
    async with running_mesh({"x": conformance_server()}) as up:
        async with running_mesh({"x": remote(up, "streamable-http", prefer_era="handshake")}) as front:
            server = front.mesh.supervisor.servers["x"]
            assert server.state == State.HEALTHY, server.reason
            assert server.reason == "initialized (legacy era)"
            assert len(up.mesh.store) == 1  # the front's own session on the upstream
            with anyio.fail_after(60):
                assert await use(front.url("x"), "auto") == [0, 50, 100]


async def blocking_workflow(client: mcp.Client, key: str) -> list[float]:
    """On the isolation fixture: list tools, then a `block` call (released first) with progress."""
    assert {"block", "release"} <= {tool.name for tool in (await client.list_tools()).tools}
    await client.call_tool("release", {"key": key})
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    assert text_of(await client.call_tool("block", {"key": key}, progress_callback=on_progress)) == f"released {key}"
    return progress


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_upstream_stopped_fails_the_call_in_flight_and_the_front_reconnects_when_it_is_back(
    upstream: str,
) -> None:
    settings, transport = UPSTREAMS[upstream]
    upstream_servers = {"x": {**fixture_server("isolation_server.py"), **settings}}
    async with anyio.create_task_group() as tg:
        up, stop_upstream = await start_mesh(tg, upstream_servers, **UPSTREAM_MESH.get(upstream, {}))
        front_server = remote(up, transport, restart=RECONNECT_FAST, request_timeout=120)
        async with running_mesh({"x": front_server}) as front:
            server = front.mesh.supervisor.servers["x"]
            async with mcp.Client(front.url("x"), mode="legacy") as client:
                assert await blocking_workflow(client, "before") == [0]
                with anyio.fail_after(30):  # far below request_timeout: the error must not be a time-out
                    reached, failed = anyio.Event(), list[MCPError]()

                    async def stuck() -> None:
                        async def on_progress(value: float, total: float | None, message: str | None) -> None:
                            reached.set()  # the call is in the upstream's server process

                        with pytest.raises(MCPError) as caught:
                            await client.call_tool("block", {"key": "stuck"}, progress_callback=on_progress)
                        failed.append(caught.value)

                    async with anyio.create_task_group() as calls:
                        calls.start_soon(stuck)
                        await reached.wait()
                        await stop_upstream()  # the upstream mesh is gone, its port closed
                    assert failed and failed[0].message, "the call in flight was answered with an error"
                    await wait_for_state(server, State.RESTARTING)
                assert "connection lost" in server.reason or "cannot reach" in server.reason, server.reason

                async with running_mesh(upstream_servers, port=up.port, **UPSTREAM_MESH.get(upstream, {})):
                    with anyio.fail_after(30):
                        await wait_for_state(server, State.HEALTHY)
                        # The same client session carries on, and new clients work as before.
                        assert await blocking_workflow(client, "after") == [0]
                        async with mcp.Client(front.url("x")) as fresh:
                            assert await blocking_workflow(fresh, "fresh") == [0]
            assert server.restarts >= 1


async def test_a_2026_upstream_gone_quiet_is_found_out_by_the_next_call_which_fails_at_once() -> None:
    """No stream is open to a 2026-07-28 upstream between calls: the next call finds the loss."""
    async with anyio.create_task_group() as tg:
        up, stop_upstream = await start_mesh(tg, {"x": conformance_server()})
        async with running_mesh({"x": remote(up, "streamable-http", restart=RECONNECT_FAST)}) as front:
            server = front.mesh.supervisor.servers["x"]
            async with mcp.Client(front.url("x"), mode="legacy") as client:
                assert text_of(await client.call_tool("test_simple_text", {})) == SIMPLE_TEXT
                await stop_upstream()
                assert server.state == State.HEALTHY  # nothing told the front yet
                with anyio.fail_after(10):
                    with pytest.raises(MCPError) as caught:
                        await client.call_tool("test_simple_text", {})
                    assert caught.value.code == BACKEND_UNAVAILABLE
                    assert caught.value.message.startswith("server 'x' is unreachable: "), caught.value.message
                    await wait_for_state(server, State.RESTARTING)


async def test_a_session_the_upstream_ends_is_replaced_by_a_new_one() -> None:
    """404 for the front's session id (the upstream forgot it): the front initializes afresh."""
    handshake_only = UPSTREAM_MESH["handshake"]
    async with running_mesh({"x": {**conformance_server(), "sharing": "session"}}, **handshake_only) as up:
        async with running_mesh({"x": remote(up, "streamable-http", restart=RECONNECT_FAST)}) as front:
            server = front.mesh.supervisor.servers["x"]
            assert len(up.mesh.store) == 1  # the front's own session on the upstream
            up.mesh.store.close_all("ended by the upstream")
            with anyio.fail_after(30):
                await wait_for_state(server, State.RESTARTING)
                assert "ended the session" in server.reason, server.reason
                await wait_for_state(server, State.HEALTHY)
                assert await use(front.url("x"), "legacy") == [0, 50, 100]
            assert server.restarts == 1
            assert len(up.mesh.store) == 1


async def test_a_cancelled_call_is_cancelled_on_the_upstream_server() -> None:
    """A 2026-07-28 upstream is told by closing the request's stream; the mesh behind it tells the process."""
    async with running_mesh({"x": fixture_server("isolation_server.py")}) as up:
        async with running_mesh({"x": remote(up, "streamable-http")}) as front:
            async with mcp.Client(front.url("x"), mode="legacy") as client:
                with anyio.fail_after(30):
                    async with anyio.create_task_group() as tg:

                        async def on_progress(value: float, total: float | None, message: str | None) -> None:
                            tg.cancel_scope.cancel()  # the call has reached the server: it said so

                        tg.start_soon(lambda: client.call_tool("block", {"key": "k"}, progress_callback=on_progress))
                    # The cancellation travels two hops to another process: nothing here to wait on.
                    while "k" not in json.loads(text_of(await client.call_tool("state", {})))["cancelled"]:  # noqa: ASYNC110
                        await anyio.sleep(0.05)


async def test_x_mcp_header_arguments_are_mirrored_into_mcp_param_headers() -> None:
    """The upstream mesh refuses a 2026 tools/call whose Mcp-Param-* headers do not mirror its arguments."""
    seen: list[Request] = []
    async with running_mesh({"x": fixture_server("isolation_server.py")}, wrap=lambda app: Recorder(app, seen)) as up:
        async with running_mesh({"x": remote(up, "streamable-http")}) as front:
            with anyio.fail_after(30):
                async with mcp.Client(front.url("x"), mode="legacy") as client:
                    reply = await client.call_tool("regional", {"region": "eu-west", "count": 3, "note": "n"})
                    assert json.loads(text_of(reply)) == {"region": "eu-west", "count": 3, "note": "n"}
                    reply = await client.call_tool("regional", {"region": "zürich"})
                    assert json.loads(text_of(reply)) == {"region": "zürich"}
    calls = [r.headers for r in seen if r.headers.get("mcp-name") == "regional"]
    assert [(h.get("mcp-param-region"), h.get("mcp-param-count")) for h in calls] == [
        ("eu-west", "3"),
        (encode_header_value("zürich"), None),
    ]
    assert encode_header_value("zürich") == "=?base64?esO8cmljaA==?="


# -- headers ---------------------------------------------------------------------------------------
class Request:
    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.raw: list[tuple[str, str]] = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        self.headers = {k.lower(): v for k, v in self.raw}


class Recorder:
    """ASGI middleware in front of the upstream mesh: remembers every HTTP request's headers."""

    def __init__(self, app: ASGIApp, seen: list[Request]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(Request(scope))
        await self.app(scope, receive, send)


async def rpc(http: httpx.AsyncClient, url: str, msg: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return await http.post(
        url,
        json=msg,
        headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json", **headers},
    )


def reply_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC response in a JSON or SSE body."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("application/json"):
        return json.loads(response.text)  # type: ignore[no-any-return]
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    return next(e for e in events if "result" in e or "error" in e)  # type: ignore[no-any-return]


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_configured_headers_reach_the_upstream_and_the_clients_authorization_never_does(
    upstream: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MCPMESH_TEST_TOKEN", SECRET)
    settings, transport = UPSTREAMS[upstream]
    headers = {"Authorization": "Bearer ${MCPMESH_TEST_TOKEN}", "X-Team": "blue"}
    seen: list[Request] = []
    client_auth = {"Authorization": f"Bearer {CLIENT_TOKEN}", "X-Client-Only": CLIENT_TOKEN}
    upstream_mesh = UPSTREAM_MESH.get(upstream, {})
    async with running_mesh(
        {"x": {**conformance_server(), **settings}}, wrap=lambda a: Recorder(a, seen), **upstream_mesh
    ) as up:
        async with running_mesh({"x": remote(up, transport, headers=headers)}) as front:
            assert SECRET not in repr(front.mesh.config)
            with anyio.fail_after(30):
                async with httpx.AsyncClient(timeout=30) as http:
                    url = front.url("x")
                    # A handshake-era session on the front, every request with the client's own token:
                    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw"}}
                    init = await rpc(
                        http, url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}, client_auth
                    )
                    session = {**client_auth, "Mcp-Session-Id": init.headers["mcp-session-id"]}
                    session["MCP-Protocol-Version"] = "2025-11-25"
                    done = await rpc(http, url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
                    assert done.status_code == 202
                    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "test_simple_text"}}
                    assert reply_of(await rpc(http, url, call, session))["result"]["content"][0]["text"] == SIMPLE_TEXT
                    # ... and a 2026-07-28 request (stateless) with it:
                    meta = {
                        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                        "io.modelcontextprotocol/clientCapabilities": {},
                    }
                    call = {
                        "jsonrpc": "2.0",
                        "id": 3,
                        "method": "tools/call",
                        "params": {"name": "test_simple_text", "_meta": meta},
                    }
                    modern = {
                        **client_auth,
                        "MCP-Protocol-Version": "2026-07-28",
                        "Mcp-Method": "tools/call",
                        "Mcp-Name": "test_simple_text",
                    }
                    assert reply_of(await rpc(http, url, call, modern))["result"]["content"][0]["text"] == SIMPLE_TEXT
    posts = [r for r in seen if r.method == "POST"]
    assert len(posts) >= 3  # the probe, the handshake or envelope traffic, and both calls
    for request in seen:
        assert request.headers.get("x-team") == "blue" or request.method == "OPTIONS", request.raw
        assert all(CLIENT_TOKEN not in value for _, value in request.raw), request.raw
        assert "x-client-only" not in request.headers
        if request.method != "OPTIONS":  # the reachability check sends no credentials
            assert [v for k, v in request.raw if k.lower() == "authorization"] == [f"Bearer {SECRET}"]
    if upstream == "handshake":
        after = [r for r in seen if r.method != "OPTIONS" and "initialize" not in r.headers.get("mcp-method", "")]
        session_ids = {r.headers.get("mcp-session-id") for r in after[2:]}  # after the probe and initialize
        assert len(session_ids) == 1 and None not in session_ids, [r.raw for r in after]
        assert {r.headers.get("mcp-protocol-version") for r in after[2:]} == {"2025-11-25"}
        assert [r.method for r in seen].count("GET") == 1  # the session's stream for server messages
        assert seen[-1].method == "DELETE"  # the front ended its session when it stopped
    elif upstream == "sse":
        assert [r.method for r in seen].count("GET") == 1  # the one stream, then POSTs to its endpoint
        assert {r.path for r in posts} == {"/servers/x/messages"}
    else:
        calls = [r.headers for r in posts if r.headers.get("mcp-method") == "tools/call"]
        assert [(h["mcp-protocol-version"], h["mcp-name"]) for h in calls] == [("2026-07-28", "test_simple_text")] * 2
        assert not any("mcp-session-id" in r.headers for r in seen)
    assert SECRET not in caplog.text
    assert "Authorization" in caplog.text  # header names are logged, values never


class Deny:
    """Refuses every HTTP request with 401, as an upstream does when the configured token is wrong."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


async def test_an_upstream_refusing_the_credentials_fails_the_server_with_a_reason_that_says_so() -> None:
    async with running_mesh({"x": conformance_server()}, wrap=Deny) as up:
        async with running_mesh({"x": remote(up, "streamable-http", restart=GIVE_UP_FAST)}) as front:
            server = front.mesh.supervisor.servers["x"]
            assert server.state == State.FAILED
            assert "HTTP 401 (check the configured headers)" in server.reason, server.reason


async def test_an_unreachable_url_is_restarting_then_failed_with_the_reason() -> None:
    async with running_mesh({"x": conformance_server()}) as up:
        port = up.port  # free once this mesh has stopped
    async with running_mesh({"x": {"url": f"http://127.0.0.1:{port}/mcp", "restart": GIVE_UP_FAST}}) as front:
        server = front.mesh.supervisor.servers["x"]
        assert server.state == State.FAILED
        assert f"cannot reach http://127.0.0.1:{port}/mcp" in server.reason, server.reason


# -- the SSE reader on its own -------------------------------------------------------------------
async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def events_of(*parts: bytes, cap: int = 1024) -> tuple[list[tuple[str, bytes]], list[str]]:
    dropped: list[str] = []
    response = httpx.Response(200, content=chunks(*parts))
    return [event async for event in sse_messages(response, cap, dropped.append)], dropped


async def test_sse_reader_joins_split_chunks_and_data_lines_and_skips_comments_and_priming() -> None:
    events, dropped = await events_of(
        b": keep-alive\n\nid: 1\ndata:\n\n",  # a comment, then a priming event without data
        b"event: endpoint\r\ndata: /messages?s=1\r\n\r\n",
        b'data: {"a":\ndata:  1}\n',
        b"\nevent: message\nda",
        b"ta: x\n\ndata: never finished\n",
    )
    assert events == [("endpoint", b"/messages?s=1"), ("message", b'{"a":\n 1}'), ("message", b"x")]
    assert dropped == []


async def test_sse_reader_skips_an_event_over_the_cap_and_carries_on() -> None:
    big = b"x" * 2000
    events, dropped = await events_of(b"data: " + big[:1000], big[1000:] + b"\n\n", b"data: small\n\n", cap=1024)
    assert events == [("message", b"small")]
    assert dropped == ["oversize"]
    events, dropped = await events_of(b"data: " + b"y" * 600 + b"\ndata: " + b"y" * 600 + b"\n\ndata: ok\n\n")
    assert events == [("message", b"ok")]
    assert dropped == ["oversize"]
