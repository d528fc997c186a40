"""`mcpmesh stdio URL`, the built-in bridge, as a stdio client runs it: the SDK's stdio client through
it to real servers behind a real mesh (a server's request to the client included), and raw stdin
lines: garbage answered with a parse error on stdout, EOF and SIGTERM ending the session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from tests.conftest import RunningMesh, everything_server, running_mesh, time_server

pytestmark = pytest.mark.anyio

MCPMESH = str(Path(sys.executable).parent / "mcpmesh")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}


def bridge(url: str) -> StdioServerParameters:
    return StdioServerParameters(command=MCPMESH, args=["stdio", url], env={"PATH": os.environ["PATH"]})


async def answer_sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    prompt = params.messages[0].content.text  # type: ignore[union-attr]
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"sampled [{prompt}]"), model="test"
    )


async def test_the_sdk_stdio_client_reaches_real_servers_through_the_bridge_and_answers_sampling() -> None:
    servers = {"time": time_server(), "everything": {**everything_server(), "sharing": "session"}}
    async with running_mesh(servers) as mesh:
        with anyio.fail_after(60), open(os.devnull, "w") as quiet:  # noqa: ASYNC230  # the bridge logs on stderr
            async with stdio_client(bridge(mesh.url("time")), errlog=quiet) as (read, write):
                async with ClientSession(read, write) as session:
                    init = await session.initialize()
                    assert init.server_info.name == "mcp-time"
                    assert "get_current_time" in {t.name for t in (await session.list_tools()).tools}
                    reply = await session.call_tool("get_current_time", {"timezone": "UTC"})
                    assert '"timezone": "UTC"' in reply.content[0].text  # type: ignore[union-attr]
            async with stdio_client(bridge(mesh.url("everything")), errlog=quiet) as (read, write):
                async with ClientSession(read, write, sampling_callback=answer_sampling) as session:
                    await session.initialize()
                    reply = await session.call_tool("trigger-sampling-request", {"prompt": "hi"})
                    text = json.dumps([c.model_dump() for c in reply.content])
                    assert "sampled [Resource trigger-sampling-request context: hi]" in text, text
            await wait_for_no_sessions(mesh)  # the bridge DELETEd both sessions when stdin closed


async def test_a_garbage_line_gets_a_parse_error_on_stdout_and_the_bridge_carries_on() -> None:
    async with running_mesh({"time": time_server()}) as mesh, await open_bridge(mesh.url("time")) as proc:
        assert proc.stdin and proc.stdout
        with anyio.fail_after(30):
            await proc.stdin.send(b"this is not json\n")
            error = json.loads(await read_line(proc))
            assert error["id"] is None and error["error"]["code"] == -32700, error
            await proc.stdin.send(b"x" * (16 * 1024 * 1024 + 1) + b"\n")  # past the bridge's line cap
            too_long = json.loads(await read_line(proc))
            assert too_long["error"]["code"] == -32700 and "longer than" in too_long["error"]["message"], too_long
            await proc.stdin.send(b'["not", "messages"]\n')
            invalid = json.loads(await read_line(proc))
            assert invalid["error"]["code"] == -32600, invalid
            await proc.stdin.send(json.dumps(INITIALIZE).encode() + b"\n")
            init = json.loads(await read_line(proc))
            assert init["id"] == 1 and init["result"]["serverInfo"]["name"] == "mcp-time", init
            assert len(mesh.mesh.store) == 1
            await proc.stdin.aclose()  # EOF: the bridge ends its session and exits
            assert await proc.wait() == 0
        await wait_for_no_sessions(mesh)


async def test_sigterm_ends_the_session_and_the_bridge() -> None:
    async with running_mesh({"time": time_server()}) as mesh, await open_bridge(mesh.url("time")) as proc:
        assert proc.stdin and proc.stdout
        with anyio.fail_after(30):
            await proc.stdin.send(json.dumps(INITIALIZE).encode() + b"\n")
            assert json.loads(await read_line(proc))["id"] == 1
            assert len(mesh.mesh.store) == 1
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        await wait_for_no_sessions(mesh)


async def test_a_request_the_server_cannot_answer_gets_a_json_rpc_error() -> None:
    async with await open_bridge("http://127.0.0.1:9/mcp") as proc:  # nothing listens on the discard port
        assert proc.stdin
        with anyio.fail_after(30):
            await proc.stdin.send(json.dumps(INITIALIZE).encode() + b"\n")
            error = json.loads(await read_line(proc))
            assert error["id"] == 1 and error["error"]["code"] == -32603, error
            assert "127.0.0.1:9" in error["error"]["message"]
            await proc.stdin.aclose()
            assert await proc.wait() == 0


async def test_what_the_server_sends_outside_any_request_comes_through_the_get_stream() -> None:
    """server-everything's simulated logging sends a message every 5 s, after the call that started
    it was answered: only the GET stream the bridge opened can carry it."""
    async with (
        running_mesh({"everything": {**everything_server(), "sharing": "session"}}) as mesh,
        await open_bridge(mesh.url("everything")) as proc,
    ):
        assert proc.stdin
        with anyio.fail_after(30):
            for message in (
                INITIALIZE,
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "toggle-simulated-logging"}},
            ):
                await proc.stdin.send(json.dumps(message).encode() + b"\n")
            while json.loads(await read_line(proc)).get("id") != 2:
                pass
            while (later := json.loads(await read_line(proc))).get("method") != "notifications/message":
                pass
            assert "level" in later["params"], later


async def open_bridge(url: str) -> anyio.abc.Process:
    return await anyio.open_process([MCPMESH, "stdio", url], stderr=subprocess.DEVNULL)


async def read_line(proc: anyio.abc.Process) -> bytes:
    """One line of the bridge's stdout (every line it writes must be a JSON-RPC message)."""
    assert proc.stdout
    buffered = getattr(proc, "_buffered", b"")
    while b"\n" not in buffered:
        buffered += await proc.stdout.receive()
    line, _, rest = buffered.partition(b"\n")
    proc._buffered = rest  # type: ignore[attr-defined]
    return line


async def wait_for_no_sessions(mesh: RunningMesh) -> None:
    with anyio.fail_after(10):
        while len(mesh.mesh.store):  # noqa: ASYNC110  # a DELETE ends the session
            await anyio.sleep(0.02)
