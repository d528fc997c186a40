"""Faults of real server processes, through the real mesh, seen by the official SDK client and raw HTTP.

Every fault comes from tests/fixtures/faulty_server.py on demand: a process killed with SIGKILL or
exiting in the middle of a call, a call never answered, junk and a 20 MiB line on stdout, a 2 MiB
result, a server that can never stay up, a command that does not exist.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import mcp
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent

from mcpmesh.supervision.server import ServerBase, State
from mcpmesh.supervision.shared import SharedServer
from tests.backend.test_process import descendants, reaped, wait_gone
from tests.conftest import RunningMesh, fixture_server, running_mesh
from tests.fixtures.faulty_server import big_text
from tests.front.test_streamable_http import call, headers, open_session

pytestmark = pytest.mark.anyio

BACKEND_EXITED, BACKEND_TIMEOUT, BACKEND_UNAVAILABLE = -32050, -32051, -32052
FAST_RESTART = {"backoff_initial": 0.05, "backoff_max": 0.1, "max_restarts": 5, "window": 60}
GIVE_UP_FAST = {"backoff_initial": 0.01, "backoff_max": 0.02, "max_restarts": 2, "window": 60}
MiB = 1024 * 1024
PROTOCOL = "2025-06-18"
USE_UVLOOP = pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")


def faulty(*flags: str, **settings: Any) -> dict[str, Any]:
    return {**fixture_server("faulty_server.py", *flags), "restart": FAST_RESTART, **settings}


def shared(mesh: RunningMesh, name: str) -> SharedServer:
    server = mesh.mesh.supervisor.servers[name]
    assert isinstance(server, SharedServer)
    return server


def text(result: CallToolResult, index: int = 0) -> str:
    block = result.content[index]
    assert isinstance(block, TextContent), block
    return block.text


async def server_pid(client: mcp.Client) -> int:
    pid = json.loads(text(await client.call_tool("pids", {})))["pid"]
    assert isinstance(pid, int)
    return pid


async def wait_for_state(server: ServerBase, state: State) -> None:
    while server.state != state:
        await server.changed.wait()


class RawSession:
    """A Streamable HTTP session driven by hand, for what the SDK client hides (status codes)."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http, self.url = http, url
        self.session_id: str | None = None
        self._ids = itertools.count(1)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self.session_id is not None:
            headers |= {"Mcp-Session-Id": self.session_id, "MCP-Protocol-Version": PROTOCOL}
        return headers

    async def initialize(self) -> dict[str, Any]:
        params = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        reply = await self.request("initialize", params)
        if "result" in reply:
            response = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert response.status_code == 202, response.text
        return reply

    async def post(self, msg: dict[str, Any]) -> httpx.Response:
        return await self.http.post(self.url, json=msg, headers=self.headers())

    async def request(
        self, method: str, params: dict[str, Any], on_message: Callable[[dict[str, Any]], None] = lambda _: None
    ) -> dict[str, Any]:
        """The response to one request (JSON or SSE); what comes before it goes to on_message."""
        request_id = next(self._ids)
        msg = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        async with self.http.stream("POST", self.url, json=msg, headers=self.headers()) as response:
            assert response.status_code == 200, (response.status_code, await response.aread())
            if method == "initialize" and "mcp-session-id" in response.headers:
                self.session_id = response.headers["mcp-session-id"]
            if response.headers["content-type"].startswith("application/json"):
                reply = json.loads(await response.aread())
                assert isinstance(reply, dict)
                return reply
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line.removeprefix("data:"))
                if event.get("id") == request_id and ("result" in event or "error" in event):
                    assert isinstance(event, dict)
                    return event
                on_message(event)
        raise AssertionError("the stream ended without a response")

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.request("tools/call", {"name": name, "arguments": arguments or {}})


# -- a process that dies in the middle of a call -------------------------------------------------
async def die_mid_call(client: mcp.Client, fault: str, pid: int) -> None:
    """Make the server process die while a tools/call is in flight on it."""
    if fault == "kill-9-from-outside":

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            os.kill(pid, signal.SIGKILL)  # the call has reached the server: it said so

        await client.call_tool("hang", {}, progress_callback=on_progress)
    else:
        await client.call_tool("crash", {"how": fault.removeprefix("crash-")})


@pytest.mark.parametrize("fault", ["kill-9-from-outside", "crash-sigkill", "crash-exit"])
async def test_shared_server_dying_mid_call_fails_the_call_at_once_and_the_session_carries_on(fault: str) -> None:
    async with running_mesh({"faulty": faulty(request_timeout=60)}) as mesh:
        server = shared(mesh, "faulty")
        with anyio.fail_after(15):  # far below request_timeout: the error must not be a time-out
            async with mcp.Client(mesh.url("faulty")) as client:
                first_pid = await server_pid(client)
                with pytest.raises(MCPError) as caught:
                    await die_mid_call(client, fault, first_pid)
                assert caught.value.code == BACKEND_EXITED, caught.value.message
                assert "exited with this request in flight" in caught.value.message
                # Same session, once the supervisor has brought the process back:
                assert text(await client.call_tool("echo", {"text": "back again"})) == "back again"
                assert await server_pid(client) != first_pid
        assert server.restarts == 1
        assert server.state == State.HEALTHY


@pytest.mark.parametrize("fault", ["kill-9-from-outside", "crash-sigkill"])
async def test_session_server_dying_mid_call_fails_the_call_and_ends_the_session(fault: str) -> None:
    async with running_mesh({"faulty": faulty(sharing="session", request_timeout=60)}) as mesh:
        with anyio.fail_after(15):
            async with httpx.AsyncClient(timeout=30) as http:
                session = RawSession(http, mesh.url("faulty"))
                assert "result" in await session.initialize()
                pids = json.loads((await session.call_tool("pids"))["result"]["content"][0]["text"])
                if fault == "crash-sigkill":
                    reply = await session.call_tool("crash", {"how": "sigkill"})
                else:

                    def kill_on_progress(msg: dict[str, Any]) -> None:
                        if msg.get("method") == "notifications/progress":
                            os.kill(pids["pid"], signal.SIGKILL)

                    params = {"name": "hang", "arguments": {}, "_meta": {"progressToken": "p1"}}
                    reply = await session.request("tools/call", params, kill_on_progress)
                assert reply["error"]["code"] == BACKEND_EXITED, reply
                assert "exited with this request in flight" in reply["error"]["message"]

                after = await session.post({"jsonrpc": "2.0", "id": 99, "method": "ping"})
                assert after.status_code == 404, after.text

                fresh = RawSession(http, mesh.url("faulty"))  # a new session gets a new process
                assert "result" in await fresh.initialize()
                reply = await fresh.call_tool("pids")
                assert json.loads(reply["result"]["content"][0]["text"])["pid"] != pids["pid"]


@pytest.mark.parametrize(
    "anyio_backend",
    [
        "asyncio",
        USE_UVLOOP,
    ],
)
async def test_kill_9_mid_call_is_noticed_even_when_a_grandchild_holds_the_servers_stdout() -> None:
    # request_timeout is well above the ~1 s the mesh needs to see an exit, yet low enough that a
    # missed exit surfaces as the time-out error (asserted against) rather than a hung test.
    async with running_mesh({"faulty": faulty("--spawn-grandchild", request_timeout=8)}) as mesh:
        with anyio.fail_after(15):
            async with mcp.Client(mesh.url("faulty")) as client:
                first_pid = await server_pid(client)
                tree = descendants(first_pid)
                assert [p.comm for p in tree.values()] == ["sleep"]
                with reaped(tree):
                    with pytest.raises(MCPError) as caught:
                        await client.call_tool("crash", {"how": "sigkill"})
                    assert caught.value.code == BACKEND_EXITED, caught.value.message
                    assert await server_pid(client) != first_pid
                    assert await wait_gone(tree.values()) == [], "the dead server's grandchild must be ended too"


# -- junk on stdout, silence, large messages ----------------------------------------------------
async def test_garbage_and_a_20_mib_line_on_stdout_are_dropped_and_counted_and_the_server_keeps_answering() -> None:
    async with running_mesh({"faulty": faulty()}) as mesh:
        server = shared(mesh, "faulty")
        child = server.child
        assert child is not None
        with anyio.fail_after(30):
            async with mcp.Client(mesh.url("faulty")) as client:
                assert text(await client.call_tool("garbage", {})) == "ok"
                assert child.dropped == Counter({"not_json": 1, "not_jsonrpc": 1})
                assert text(await client.call_tool("huge_line", {"mib": 20})) == "ok"
                assert child.dropped == Counter({"not_json": 1, "not_jsonrpc": 1, "oversize": 1})
                assert text(await client.call_tool("echo", {"text": "still here"})) == "still here"
        assert server.child is child
        assert server.restarts == 0


@pytest.mark.parametrize("sharing", ["shared", "session"])
async def test_a_call_the_server_never_answers_fails_with_the_timeout_error(sharing: str) -> None:
    async with running_mesh({"faulty": faulty(sharing=sharing, request_timeout=1)}) as mesh:
        with anyio.fail_after(15):
            async with mcp.Client(mesh.url("faulty"), mode="legacy") as client:  # a session: one process
                pid = await server_pid(client)
                with pytest.raises(MCPError) as caught:
                    await client.call_tool("hang", {})
                assert caught.value.code == BACKEND_TIMEOUT, caught.value.message
                assert "did not answer tools/call within 1s" in caught.value.message
                assert await server_pid(client) == pid  # the same process answers the next call


@pytest.mark.parametrize("sharing", ["shared", "session"])
async def test_a_2_mib_result_arrives_intact(sharing: str) -> None:
    async with running_mesh({"faulty": faulty(sharing=sharing)}) as mesh:
        with anyio.fail_after(30):
            async with mcp.Client(mesh.url("faulty")) as client:
                result = await client.call_tool("big_result", {"mib": 2})
    expected = big_text(2 * MiB)
    received = text(result)
    assert len(received) == len(expected) == 2 * MiB
    assert received == expected
    assert text(result, 1) == hashlib.sha256(received.encode()).hexdigest()


# -- servers that cannot run ---------------------------------------------------------------------
async def assert_unavailable_while_others_serve(mesh: RunningMesh, broken: str, working: str, why: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        health = (await http.get(f"{mesh.base_url}/healthz")).json()
        assert health["servers"] == {broken: "failed", working: "healthy"}
        reply = await RawSession(http, mesh.url(broken)).initialize()
        assert reply["error"]["code"] == BACKEND_UNAVAILABLE, reply
        assert why in reply["error"]["message"]
    async with mcp.Client(mesh.url(working)) as client:
        assert text(await client.call_tool("echo", {"text": "unaffected"})) == "unaffected"


@pytest.mark.parametrize(
    "sharing",
    [
        "shared",
        "session",
    ],
)
async def test_a_server_that_exits_at_once_every_time_goes_failed_and_others_keep_serving(sharing: str) -> None:
    servers = {
        "crashy": {**fixture_server("faulty_server.py", "--exit-at-start", "7"), "sharing": sharing},
        "good": faulty(),
    }
    servers["crashy"]["restart"] = GIVE_UP_FAST
    with anyio.fail_after(10):
        async with running_mesh(servers) as mesh:
            crashy = mesh.mesh.supervisor.servers["crashy"]
            await wait_for_state(crashy, State.FAILED)
            assert "exited" in crashy.reason
            assert "3 exits" in crashy.reason or "3 failures" in crashy.reason, crashy.reason
            await assert_unavailable_while_others_serve(mesh, "crashy", "good", "exited")


async def test_a_server_that_dies_right_after_its_handshake_every_time_goes_failed_with_its_exit_code() -> None:
    servers = {"crashy": {**faulty("--exit-after-handshake", "7"), "restart": GIVE_UP_FAST}, "good": faulty()}
    with anyio.fail_after(10):
        async with running_mesh(servers) as mesh:
            crashy = shared(mesh, "crashy")
            await wait_for_state(crashy, State.FAILED)
            assert "exited with code 7" in crashy.reason
            assert "3 exits within 60s" in crashy.reason
            assert crashy.restarts == GIVE_UP_FAST["max_restarts"]
            await assert_unavailable_while_others_serve(mesh, "crashy", "good", "exited with code 7")


@pytest.mark.parametrize("sharing", ["shared", "session"])
async def test_a_command_that_does_not_exist_is_failed_at_once_not_retried(sharing: str) -> None:
    """Retrying cannot make a missing command appear: `failed` with no restart in between, even with
    the default restart policy, and the reason says what brings it back."""
    missing = {"command": "mcpmesh-test-no-such-command", "sharing": sharing}
    with anyio.fail_after(10):
        async with running_mesh({"missing": missing, "good": faulty()}) as mesh:
            server = mesh.mesh.supervisor.servers["missing"]
            await wait_for_state(server, State.FAILED)
            assert server.reason.startswith("command not found on PATH: mcpmesh-test-no-such-command")
            assert server.reason.endswith("not retried: install it, then `mcpmesh restart missing`")
            states = [
                e.detail["state"] for e in mesh.mesh.registry.events(0, 100, "missing") if e.kind == "state_changed"
            ]
            assert states == ["failed"]
            assert server.restarts == 0


@pytest.mark.parametrize("sharing", ["shared", "session"])
async def test_a_command_that_does_not_exist_goes_failed_with_command_not_found(sharing: str) -> None:
    missing = {"command": "mcpmesh-test-no-such-command", "sharing": sharing, "restart": GIVE_UP_FAST}
    with anyio.fail_after(10):
        async with running_mesh({"missing": missing, "good": faulty()}) as mesh:
            server = mesh.mesh.supervisor.servers["missing"]
            await wait_for_state(server, State.FAILED)
            assert "command not found" in server.reason
            assert "mcpmesh-test-no-such-command" in server.reason
            await assert_unavailable_while_others_serve(mesh, "missing", "good", "command not found")


@pytest.mark.parametrize("sharing", ["shared", "session"])
async def test_a_message_nested_too_deep_to_forward_is_refused_and_leaves_no_call_behind(sharing: str) -> None:
    """JSON parses 300 levels deep but cannot be written again past 255: such a tools/call gets a
    JSON-RPC error with its id and nothing stays in flight, however often it is sent, so the
    circuit never opens and the next call is served."""
    deep = '{"a":' * 300 + "1" + "}" * 300
    # The server is named "conf" for the Streamable HTTP tests' raw session helpers.
    async with running_mesh({"conf": {**faulty(), "sharing": sharing, "breaker_threshold": 2}}) as mesh:
        async with httpx.AsyncClient(timeout=20) as http:
            url = mesh.url("conf")
            session = headers(await open_session(http, mesh))
            for request_id in range(1, 6):
                params = f'"params":{{"name":"echo","arguments":{deep}}}'
                body = f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",{params}}}'
                refused = await http.post(url, content=body.encode(), headers=session)
                assert refused.status_code == 400, refused.text
                assert refused.json()["id"] == request_id and refused.json()["error"]["code"] == -32600
            echo = call(9, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
            served = await http.post(url, json=echo, headers=session)
            assert served.status_code == 200 and "result" in served.json(), served.text
        (opened,) = mesh.mesh.store.sessions()
        assert opened.inflight == {}
        assert not opened.mux.calls and not opened.mux.tokens  # type: ignore[attr-defined]
        circuit = mesh.mesh.supervisor.servers["conf"].circuit
        assert circuit is None or circuit.state == "closed"
