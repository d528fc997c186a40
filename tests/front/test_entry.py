"""MCP calls take a short way past starlette's router (MeshApp), yet keep what the long way gave
them: the Host/Origin guard, and a 500 (with the error logged) when the gateway itself crashes;
the /v1 API still reads X-Forwarded-For from a trusted proxy (loopback) for who asked."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest

from mcpmesh.front.streamable_http import StreamableHttpEndpoint
from tests.conftest import conformance_server, running_mesh
from tests.front.test_streamable_http import INIT, headers

pytestmark = pytest.mark.anyio


async def test_a_crash_in_the_gateway_is_a_500_and_the_next_call_is_served(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve = StreamableHttpEndpoint.serve
    crashes = 0

    async def crash_once(
        self: StreamableHttpEndpoint, *args: Any
    ) -> None:  # a bug in the gateway: no client can cause it
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("a bug")
        await serve(self, *args)

    monkeypatch.setattr(StreamableHttpEndpoint, "serve", crash_once)
    async with running_mesh({"conf": conformance_server()}) as mesh:
        logging.getLogger("uvicorn").addHandler(
            caplog.handler
        )  # after uvicorn set its loggers up; they do not propagate
        async with httpx.AsyncClient(timeout=20) as http:
            crashed = await http.post(mesh.url("conf"), json=INIT, headers=headers(version=None))
            assert crashed.status_code == 500 and crashed.text == "Internal Server Error"
            served = await http.post(mesh.url("conf"), json=INIT, headers=headers(version=None))
            assert served.status_code == 200 and served.json()["result"]["serverInfo"]
    logging.getLogger("uvicorn").removeHandler(caplog.handler)
    logged = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert logged and str(logged[0].exc_info[1]) == "a bug"  # type: ignore[index]


async def test_mcp_calls_still_pass_the_host_and_origin_guard() -> None:
    async with running_mesh({"conf": conformance_server()}) as mesh, httpx.AsyncClient(timeout=20) as http:
        foreign_host = await http.post(mesh.url("conf"), json=INIT, headers={**headers(), "Host": "evil.example"})
        assert foreign_host.status_code == 421
        foreign_origin = await http.post(
            mesh.url("conf"), json=INIT, headers={**headers(), "Origin": "http://evil.example"}
        )
        assert foreign_origin.status_code == 403


async def test_the_api_still_reads_the_client_a_trusted_proxy_names() -> None:
    async with running_mesh({"conf": conformance_server()}) as mesh, httpx.AsyncClient(timeout=20) as http:
        stopped = await http.post(f"{mesh.base_url}/v1/servers/conf/stop", headers={"X-Forwarded-For": "203.0.113.7"})
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["server"]["reason"] == "stopped by api (203.0.113.7)"


async def raw_exchange(port: int, head: list[str], body: bytes = b"") -> tuple[int, bytes]:
    """One request written byte for byte (no client library sends two Host headers or keeps %2F
    as asked), its status and body."""
    lines = [*head, "Connection: close", f"Content-Length: {len(body)}", "", ""]
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send("\r\n".join(lines).encode() + body)
        reply = b""
        with anyio.fail_after(20):
            while True:
                try:
                    reply += await stream.receive()
                except anyio.EndOfStream:
                    break
    return int(reply.split(b" ", 2)[1]), reply.partition(b"\r\n\r\n")[2]


async def test_an_encoded_slash_cannot_route_a_request_to_another_path() -> None:
    """`/v1/servers/conf%2Fstop` would route as /v1/servers/conf/stop (routing reads the decoded
    path) past any proxy rule on paths: refused, and the server keeps running."""
    async with running_mesh({"conf": conformance_server()}) as mesh:
        for path in ("/v1/servers/conf%2Fstop", "/v1/servers/conf%2fstop", "/servers/conf%2Fmcp"):
            status, body = await raw_exchange(mesh.port, [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{mesh.port}"])
            assert status == 400 and b"encoded slash" in body, (path, status, body)
        assert mesh.mesh.supervisor.servers["conf"].state == "healthy"
        status, _ = await raw_exchange(mesh.port, ["GET /v1/servers/conf HTTP/1.1", f"Host: 127.0.0.1:{mesh.port}"])
        assert status == 200


async def test_two_host_headers_are_refused_whichever_comes_last() -> None:
    async with running_mesh({"conf": conformance_server()}) as mesh:
        for hosts in (["evil.example.com", f"127.0.0.1:{mesh.port}"], [f"127.0.0.1:{mesh.port}", "evil.example.com"]):
            head = ["GET /healthz HTTP/1.1", *(f"Host: {h}" for h in hosts)]
            status, body = await raw_exchange(mesh.port, head)
            assert status == 400 and b"more than one Host" in body, (hosts, status, body)


async def test_a_post_its_client_abandons_mid_body_logs_no_error_and_the_mesh_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that goes away before its body is in (a cancelled upload, a killed client) is no
    error of the mesh's: no traceback in the log, and the next request is served."""
    async with running_mesh({"conf": conformance_server()}) as mesh:
        with caplog.at_level(logging.INFO):
            for path in ("/servers/conf/mcp", "/servers/conf/messages?session_id=x"):
                head = [
                    f"POST {path} HTTP/1.1",
                    f"Host: 127.0.0.1:{mesh.port}",
                    "Content-Type: application/json",
                    "Accept: application/json, text/event-stream",
                    "Content-Length: 1000",
                    "",
                    "",
                ]
                async with await anyio.connect_tcp("127.0.0.1", mesh.port) as stream:
                    await stream.send("\r\n".join(head).encode() + b'{"jsonrpc": "2.0", ')
                status, _ = await raw_exchange(mesh.port, ["GET /healthz HTTP/1.1", f"Host: 127.0.0.1:{mesh.port}"])
                assert status == 200
        noise = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert noise == [], [r.getMessage() for r in noise]
