"""A request whose body trickles in slower than `[mesh] body_timeout` is answered 408 and its
connection closed, before anything of it reaches a server; other clients are served meanwhile.
Real uvicorn (the harness), spoken to over raw sockets."""

from __future__ import annotations

import json

import anyio
import httpx
import mcp
import pytest

from tests.conftest import conformance_server, running_mesh
from tests.front.test_streamable_http import INIT

pytestmark = pytest.mark.anyio

TRICKLER = {**INIT, "params": {**INIT["params"], "clientInfo": {"name": "trickler", "version": "1"}}}  # type: ignore[dict-item]


def post_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Type: application/json\r\nMCP-Protocol-Version: 2025-11-25\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def trickle_until_answered(port: int, head: bytes, body: bytes) -> bytes:
    """Send `head`, then `body` a byte at a time, until the mesh answers; what it said, to EOF."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(head)
        reply = b""
        with anyio.fail_after(15):  # body_timeout is 1 s; the body would take 0.2 s a byte to come whole
            for byte in body:
                await stream.send(bytes([byte]))
                with anyio.move_on_after(0.2):
                    reply += await stream.receive()
                    break
            else:
                raise AssertionError("the whole body went in: no deadline cut it short")
            while True:
                try:
                    reply += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return reply


async def test_a_trickled_body_gets_408_and_reaches_no_server_while_others_are_served() -> None:
    async with running_mesh({"conf": conformance_server()}, body_timeout=1) as mesh:
        body = json.dumps(TRICKLER).encode()
        served: list[str] = []

        async def a_normal_client() -> None:
            async with mcp.Client(mesh.url("conf"), mode="legacy") as client:
                reply = await client.call_tool("test_simple_text", {})
                served.append(reply.content[0].text)  # type: ignore[union-attr]

        async with anyio.create_task_group() as tg:
            tg.start_soon(a_normal_client)
            reply = await trickle_until_answered(mesh.port, post_head("/servers/conf/mcp", len(body)), body)
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert b"connection: close" in reply and b"Request not received within 1 s" in reply
        assert served == ["This is a simple text response for testing."]
        assert not [s for s in mesh.mesh.store.sessions() if s.client == "trickler"]
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=20) as http:
            events = (await http.get("/v1/events", params={"server": "conf", "limit": 1000})).json()["events"]
            metrics = (await http.get("/metrics")).text
        assert not [e for e in events if "trickler" in json.dumps(e)]
        assert 'mcpmesh_http_refused_total{reason="body_timeout"} 1.0' in metrics
