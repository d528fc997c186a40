"""The Streamable HTTP front, rule by rule (MCP-NOTES §2.1 and §9 items 1-19), over raw HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import orjson
import pytest

from tests.conftest import RunningMesh, conformance_server, running_mesh

pytestmark = pytest.mark.anyio

ACCEPT_BOTH = "application/json, text/event-stream"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}


def headers(session: str | None = None, version: str | None = "2025-11-25", **extra: str) -> dict[str, str]:
    h = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json", **extra}
    if session is not None:
        h["Mcp-Session-Id"] = session
    if version is not None:
        h["MCP-Protocol-Version"] = version
    return h


@pytest.fixture
async def mesh() -> AsyncIterator[RunningMesh]:
    async with running_mesh({"conf": conformance_server()}, max_sessions=5, max_body_bytes=64 * 1024) as m:
        yield m


@pytest.fixture
async def http(mesh: RunningMesh) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=20) as client:
        yield client


async def open_session(http: httpx.AsyncClient, mesh: RunningMesh, version: str = "2025-11-25") -> str:
    init = {**INIT, "params": {**INIT["params"], "protocolVersion": version}}  # type: ignore[dict-item]
    reply = await http.post(mesh.url("conf"), json=init, headers=headers(version=None))
    assert reply.status_code == 200, reply.text
    session = reply.headers["mcp-session-id"]
    done = await http.post(
        mesh.url("conf"), json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers(session)
    )
    assert done.status_code == 202 and done.content == b""
    return session


def call(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


def sse_messages(body: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


async def test_initialize_mints_a_visible_ascii_session_id_with_at_least_128_bits(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    ids = {await open_session(http, mesh) for _ in range(3)}
    assert len(ids) == 3
    for session in ids:
        assert all(0x21 <= ord(ch) <= 0x7E for ch in session)
        assert len(session) >= 32  # 24 random bytes, base64url


async def test_initialize_negotiates_the_clients_version_or_our_latest(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    for asked, expected in [("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"), ("1999-01-01", "2025-11-25")]:
        init = {**INIT, "params": {**INIT["params"], "protocolVersion": asked}}  # type: ignore[dict-item]
        reply = await http.post(mesh.url("conf"), json=init, headers=headers(version=None))
        assert reply.json()["result"]["protocolVersion"] == expected


async def test_request_without_session_id_gets_400(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    reply = await http.post(mesh.url("conf"), json=call(2, "tools/list"), headers=headers())
    assert reply.status_code == 400
    assert reply.json()["error"]["message"].startswith("Bad Request: Mcp-Session-Id")


async def test_unknown_session_gets_404(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    reply = await http.post(mesh.url("conf"), json=call(2, "tools/list"), headers=headers("no-such-session"))
    assert reply.status_code == 404


async def test_session_of_another_server_is_answered_as_unknown() -> None:
    servers = {"a": conformance_server(), "b": conformance_server()}
    async with running_mesh(servers) as mesh, httpx.AsyncClient(timeout=20) as http:
        reply = await http.post(mesh.url("a"), json=INIT, headers=headers(version=None))
        session = reply.headers["mcp-session-id"]
        other = await http.post(mesh.url("b"), json=call(2, "tools/list"), headers=headers(session))
        assert other.status_code == 404
        own = await http.post(mesh.url("a"), json=call(2, "tools/list"), headers=headers(session))
        assert own.status_code == 200


async def test_delete_ends_the_session_and_later_requests_get_404(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    session = await open_session(http, mesh)
    assert (await http.post(mesh.url("conf"), json=call(2, "ping"), headers=headers(session))).status_code == 200
    assert (await http.delete(mesh.url("conf"), headers=headers(session))).status_code == 200
    assert (await http.post(mesh.url("conf"), json=call(3, "ping"), headers=headers(session))).status_code == 404
    assert (await http.delete(mesh.url("conf"), headers=headers(session))).status_code == 404


async def test_unsupported_protocol_version_header_gets_400(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    # Not a handshake-era version, so not a session request: the 2026-07-28 ladder refuses it
    # (no `_meta` envelope here; with one it is -32022, see front/test_stateless.py).
    session = await open_session(http, mesh)
    reply = await http.post(mesh.url("conf"), json=call(2, "ping"), headers=headers(session, version="2099-01-01"))
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == -32602 and "result" not in reply.json()


async def test_any_supported_version_header_is_accepted_and_a_missing_one_too(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    session = await open_session(http, mesh)
    for version in ("2025-03-26", "2025-06-18", "2025-11-25", None):
        reply = await http.post(mesh.url("conf"), json=call(2, "ping"), headers=headers(session, version=version))
        assert reply.status_code == 200 and reply.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}


async def test_foreign_origin_gets_403_and_loopback_origins_pass(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    evil = await http.post(mesh.url("conf"), json=INIT, headers=headers(version=None, Origin="http://evil.example.com"))
    assert evil.status_code == 403
    for origin in (f"http://localhost:{mesh.port}", "http://127.0.0.1:3000", "https://[::1]:8443"):
        ok = await http.post(mesh.url("conf"), json=INIT, headers=headers(version=None, Origin=origin))
        assert ok.status_code == 200, origin


async def test_foreign_host_gets_421_before_anything_else(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    reply = await http.post(mesh.url("conf"), json=INIT, headers=headers(version=None, Host="evil.example.com"))
    assert reply.status_code == 421
    health = await http.get("/healthz", headers={"Host": "attacker.test:80"})
    assert health.status_code == 421


async def test_allow_lists_admit_configured_hosts_and_origins() -> None:
    settings = {"allowed_hosts": ["mesh.internal"], "allowed_origins": ["https://app.example.com"]}
    async with running_mesh({"conf": conformance_server()}, **settings) as mesh, httpx.AsyncClient() as http:
        extra = {"Host": "mesh.internal:8080", "Origin": "https://app.example.com"}
        ok = await http.post(mesh.url("conf"), json=INIT, headers=headers(version=None, **extra))
        assert ok.status_code == 200
        still_foreign = await http.post(
            mesh.url("conf"), json=INIT, headers=headers(version=None, Origin="https://other.example.com")
        )
        assert still_foreign.status_code == 403


async def test_body_over_the_cap_gets_413_and_never_reaches_the_server(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    session = await open_session(http, mesh)
    big = call(2, "tools/call", {"name": "test_simple_text", "arguments": {"pad": "x" * (70 * 1024)}})
    reply = await http.post(mesh.url("conf"), json=big, headers=headers(session))
    assert reply.status_code == 413
    chunked = await http.post(
        mesh.url("conf"), content=_chunks(orjson.dumps(big)), headers=headers(session)
    )  # no Content-Length: the cap is enforced while reading
    assert chunked.status_code == 413
    after = await http.post(mesh.url("conf"), json=call(3, "ping"), headers=headers(session))
    assert after.status_code == 200


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 8192):
        yield data[start : start + 8192]


async def test_post_without_both_accept_types_gets_406(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    for accept in ("application/json", "text/event-stream", "*/*"):
        reply = await http.post(mesh.url("conf"), json=INIT, headers={**headers(version=None), "Accept": accept})
        assert reply.status_code == 406, accept


async def test_non_json_content_type_gets_415(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    reply = await http.post(
        mesh.url("conf"), content=orjson.dumps(INIT), headers={**headers(version=None), "Content-Type": "text/plain"}
    )
    assert reply.status_code == 415


async def test_malformed_json_gets_400_parse_error_and_the_session_lives_on(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    session = await open_session(http, mesh)
    broken = await http.post(mesh.url("conf"), content=b'{"jsonrpc": "2.0", "id": 1,', headers=headers(session))
    assert broken.status_code == 400 and broken.json()["error"]["code"] == -32700
    not_rpc = await http.post(mesh.url("conf"), json={"hello": "world"}, headers=headers(session))
    assert not_rpc.status_code == 400 and not_rpc.json()["error"]["code"] == -32600
    bad_id = await http.post(
        mesh.url("conf"), json={"jsonrpc": "2.0", "id": None, "method": "ping"}, headers=headers(session)
    )
    assert bad_id.status_code == 400
    ok = await http.post(mesh.url("conf"), json=call(2, "ping"), headers=headers(session))
    assert ok.json()["result"] == {}


async def test_batch_is_refused_on_2025_11_25_and_processed_on_2025_03_26(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    modern = await open_session(http, mesh)
    refused = await http.post(mesh.url("conf"), json=[call(2, "ping")], headers=headers(modern))
    assert refused.status_code == 400
    old = await open_session(http, mesh, version="2025-03-26")
    batch = [call(2, "ping"), call(3, "tools/list"), {"jsonrpc": "2.0", "method": "notifications/whatever"}]
    reply = await http.post(mesh.url("conf"), json=batch, headers=headers(old, version="2025-03-26"))
    assert reply.status_code == 200
    by_id = {item["id"]: item for item in reply.json()}
    assert by_id[2]["result"] == {}
    assert any(tool["name"] == "test_simple_text" for tool in by_id[3]["result"]["tools"])


async def test_notification_and_response_posts_get_202_with_empty_body(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    session = await open_session(http, mesh)
    note = await http.post(
        mesh.url("conf"),
        json={"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
        headers=headers(session),
    )
    assert note.status_code == 202 and note.content == b""
    stray = await http.post(mesh.url("conf"), json={"jsonrpc": "2.0", "id": 99, "result": {}}, headers=headers(session))
    assert stray.status_code == 202 and stray.content == b""


async def test_reply_is_json_when_the_response_comes_first(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    session = await open_session(http, mesh)
    reply = await http.post(
        mesh.url("conf"), json=call("s-1", "tools/call", {"name": "test_simple_text"}), headers=headers(session)
    )
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["id"] == "s-1"
    assert reply.json()["result"]["content"][0]["type"] == "text"


async def test_reply_is_sse_when_notifications_precede_the_response(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    session = await open_session(http, mesh)
    params = {"name": "test_tool_with_progress", "_meta": {"progressToken": "tok"}}
    reply = await http.post(mesh.url("conf"), json=call(7, "tools/call", params), headers=headers(session))
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["x-accel-buffering"] == "no"
    messages = sse_messages(reply.text)
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert progress and all(m["params"]["progressToken"] == "tok" for m in progress)
    assert messages[-1]["id"] == 7 and "result" in messages[-1]


async def test_get_stream_carries_keepalives_and_only_one_is_allowed_per_session() -> None:
    async with running_mesh({"conf": conformance_server()}, keepalive_interval=0.2) as mesh:
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=20) as http:
            session = await open_session(http, mesh)
            get_headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session}
            async with http.stream("GET", mesh.url("conf"), headers=get_headers) as stream:
                assert stream.status_code == 200
                assert stream.headers["x-accel-buffering"] == "no"
                second = await http.get(mesh.url("conf"), headers=get_headers)
                assert second.status_code == 409
                with anyio.fail_after(10):
                    async for line in stream.aiter_lines():
                        if line.startswith(":"):
                            break
            wrong_accept = await http.get(mesh.url("conf"), headers={**get_headers, "Accept": "application/json"})
            assert wrong_accept.status_code == 406


async def test_unsupported_http_method_gets_405_with_allow(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    reply = await http.put(mesh.url("conf"), json=INIT, headers=headers())
    assert reply.status_code == 405
    assert set(reply.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST", "DELETE"}


async def test_unknown_server_gets_404(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    reply = await http.post(mesh.url("nope"), json=INIT, headers=headers(version=None))
    assert reply.status_code == 404


async def test_session_cap_gives_503_and_a_freed_slot_is_reusable(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    sessions = [await open_session(http, mesh) for _ in range(5)]
    full = await http.post(mesh.url("conf"), json=INIT, headers=headers(version=None))
    assert full.status_code == 503
    await http.delete(mesh.url("conf"), headers=headers(sessions[0]))
    again = await http.post(mesh.url("conf"), json=INIT, headers=headers(version=None))
    assert again.status_code == 200


async def test_idle_sessions_expire_and_then_get_404() -> None:
    async with running_mesh({"conf": conformance_server()}, session_idle_timeout=0.3) as mesh:
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=20) as http:
            session = await open_session(http, mesh)
            with anyio.fail_after(10):
                while len(mesh.mesh.store):  # noqa: ASYNC110  # expiry is time-driven; no event to await
                    await anyio.sleep(0.05)
            reply = await http.post(mesh.url("conf"), json=call(2, "ping"), headers=headers(session))
            assert reply.status_code == 404


async def test_duplicate_in_flight_id_in_one_session_is_refused(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    init = {**INIT, "params": {**INIT["params"], "capabilities": {"sampling": {}}}}  # type: ignore[dict-item]
    session = (await http.post(mesh.url("conf"), json=init, headers=headers(version=None))).headers["mcp-session-id"]
    held = call(5, "tools/call", {"name": "test_sampling", "arguments": {"prompt": "hold"}})
    with anyio.fail_after(15):
        # The call stays in flight until this test answers the server's sampling request.
        async with http.stream("POST", mesh.url("conf"), json=held, headers=headers(session)) as stream:
            lines = stream.aiter_lines()
            request = await _next_message(lines)
            assert request["method"] == "sampling/createMessage"
            dup = await http.post(mesh.url("conf"), json=call(5, "ping"), headers=headers(session))
            assert dup.json()["error"]["code"] == -32600
            answer = {"role": "assistant", "content": {"type": "text", "text": "ok"}, "model": "m"}
            posted = await http.post(
                mesh.url("conf"),
                json={"jsonrpc": "2.0", "id": request["id"], "result": answer},
                headers=headers(session),
            )
            assert posted.status_code == 202
            final = await _next_message(lines)
    assert final["id"] == 5 and "result" in final


async def _next_message(lines: AsyncIterator[str]) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data:"):
            return orjson.loads(line[5:])  # type: ignore[no-any-return]
    raise AssertionError("stream ended")


async def test_healthz_reports_the_gateway_and_each_server(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    reply = await http.get("/healthz")
    assert reply.status_code == 200
    assert reply.json()["servers"] == {"conf": "healthy"}


async def test_hostile_ids_and_tokens_get_clear_errors_or_are_ignored_never_a_500(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    session = await open_session(http, mesh)
    url, h = mesh.url("conf"), headers(session)
    object_id = await http.post(url, json={"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}, headers=h)
    assert object_id.status_code == 400 and object_id.json()["error"]["code"] == -32600
    array_response = await http.post(url, json={"jsonrpc": "2.0", "id": [1], "result": {}}, headers=h)
    assert array_response.status_code == 400
    odd_cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {"x": [1]}}}
    assert (await http.post(url, json=odd_cancel, headers=h)).status_code == 202
    odd_token = call(9, "tools/call", {"name": "test_simple_text", "_meta": {"progressToken": {"t": 1}}})
    reply = await http.post(url, json=odd_token, headers=h)
    assert reply.status_code == 200 and reply.json()["id"] == 9
    assert (await http.post(url, json=call(10, "ping"), headers=h)).json()["result"] == {}


async def test_a_request_to_an_unavailable_server_is_answered_with_its_own_id_in_both_eras() -> None:
    broken = {"command": "/nonexistent/mcp-server", "restart": {"max_restarts": 0}}
    async with running_mesh({"broken": broken}) as mesh, httpx.AsyncClient(timeout=20) as http:
        legacy = await http.post(mesh.url("broken"), json={**INIT, "id": "init-7"}, headers=headers(version=None))
        assert legacy.json()["id"] == "init-7" and legacy.json()["error"]["code"] == -32052
        meta = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        modern = await http.post(
            mesh.url("broken"),
            json={"jsonrpc": "2.0", "id": 42, "method": "tools/list", "params": {"_meta": meta}},
            headers={**headers(version="2026-07-28"), "Mcp-Method": "tools/list"},
        )
        assert modern.json()["id"] == 42 and modern.json()["error"]["code"] == -32052


async def test_array_params_are_refused_with_the_request_id(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    """JSON-RPC allows positional params; MCP does not, and a server may never answer them (the
    client would wait out the request timeout): refused at once, before anything is forwarded."""
    session = await open_session(http, mesh)
    reply = await http.post(
        mesh.url("conf"),
        json={"jsonrpc": "2.0", "id": 41, "method": "tools/list", "params": []},
        headers=headers(session),
    )
    assert reply.status_code == 400
    assert reply.json()["id"] == 41 and reply.json()["error"]["code"] == -32600
    assert "params must be an object" in reply.json()["error"]["message"]
