"""2026-07-28 requests on the same endpoint (MCP-NOTES §2.2, §9 items 20-29), over raw HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import orjson
import pytest

from tests.conftest import RunningMesh, conformance_server, fixture_server, running_mesh
from tests.front.test_entry import raw_exchange

pytestmark = pytest.mark.anyio

V = "2026-07-28"
CAPS_META = {"io.modelcontextprotocol/protocolVersion": V, "io.modelcontextprotocol/clientCapabilities": {}}


def request(request_id: Any, method: str, params: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    body = dict(params or {})
    body["_meta"] = {**CAPS_META, **meta}
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": body}


def headers(msg: dict[str, Any], **override: str | None) -> dict[str, str]:
    h: dict[str, str | None] = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": V,
        "Mcp-Method": msg["method"],
    }
    name = msg["params"].get("name", msg["params"].get("uri"))
    if name is not None:
        h["Mcp-Name"] = name
    h.update(override)
    return {k: v for k, v in h.items() if v is not None}


@pytest.fixture
async def mesh() -> AsyncIterator[RunningMesh]:
    servers = {"conf": conformance_server(), "iso": fixture_server("isolation_server.py")}
    async with running_mesh(servers) as m:
        yield m


@pytest.fixture
async def http(mesh: RunningMesh) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=20) as client:
        yield client


async def post(http: httpx.AsyncClient, url: str, msg: dict[str, Any], **override: str | None) -> httpx.Response:
    return await http.post(url, content=orjson.dumps(msg), headers=headers(msg, **override))


def error_of(reply: httpx.Response) -> dict[str, Any]:
    body = reply.json()
    assert "result" not in body, body
    return body["error"]  # type: ignore[no-any-return]


async def test_get_and_delete_get_405_allowing_only_post(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    for method in ("GET", "DELETE"):
        reply = await http.request(method, mesh.url("conf"), headers={"MCP-Protocol-Version": V, "Accept": "*/*"})
        assert reply.status_code == 405 and reply.headers["allow"] == "POST"


async def test_missing_envelope_fields_get_400_invalid_params(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    no_meta = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    reply = await post(http, mesh.url("conf"), no_meta)
    assert reply.status_code == 400 and error_of(reply)["code"] == -32602
    no_caps = request(2, "tools/list")
    del no_caps["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"]
    reply = await post(http, mesh.url("conf"), no_caps)
    assert reply.status_code == 400 and error_of(reply)["code"] == -32602
    assert "clientCapabilities" in error_of(reply)["message"]


async def test_header_that_disagrees_with_the_body_gets_400_header_mismatch(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    url = mesh.url("conf")
    listing = request(1, "tools/list")
    calling = request(2, "tools/call", {"name": "test_simple_text", "arguments": {}})
    cases = [
        (listing, {"Mcp-Method": "prompts/list"}),
        (listing, {"Mcp-Method": None}),
        (calling, {"Mcp-Name": "another_tool"}),
        (calling, {"Mcp-Name": None}),
        (calling, {"Mcp-Name": "=?base64?" + base64.b64encode(b"another_tool").decode() + "?="}),
        (calling, {"Mcp-Name": "=?base64?not base64!?="}),
        (request(3, "resources/read", {"uri": "test://static-text"}), {"Mcp-Name": "test://other"}),
    ]
    for msg, override in cases:
        reply = await post(http, url, msg, **override)
        assert reply.status_code == 400, (msg["method"], override)
        assert error_of(reply)["code"] == -32020, (msg["method"], override)
    version_mismatch = request(4, "tools/list", **{"io.modelcontextprotocol/protocolVersion": "2099-01-01"})
    reply = await post(http, url, version_mismatch)
    assert reply.status_code == 400 and error_of(reply)["code"] == -32020


async def test_a_duplicated_routing_header_is_refused(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    msg = request(1, "tools/list")
    raw = [(k, v) for k, v in headers(msg).items()] + [("Mcp-Method", "tools/list")]
    reply = await http.post(mesh.url("conf"), content=orjson.dumps(msg), headers=raw)
    assert reply.status_code == 400 and error_of(reply)["code"] == -32020


async def test_base64_encoded_name_header_is_decoded_before_comparing(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    msg = request(1, "tools/call", {"name": "test_simple_text", "arguments": {}})
    encoded = "=?base64?" + base64.b64encode(b"test_simple_text").decode() + "?="
    reply = await post(http, mesh.url("conf"), msg, **{"Mcp-Name": encoded})
    assert reply.status_code == 200
    assert reply.json()["result"]["content"][0]["type"] == "text"


async def raw_post(mesh: RunningMesh, path: str, head: dict[str, str], body: bytes) -> tuple[int, Any]:
    """A POST written byte for byte (httpx refuses header values with surrounding whitespace)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{mesh.port}", *(f"{k}: {v}" for k, v in head.items())]
    status, reply = await raw_exchange(mesh.port, lines, body)
    return status, json.loads(reply)


async def test_whitespace_around_routing_header_values_is_not_part_of_them(mesh: RunningMesh) -> None:
    """An HTTP field value excludes the whitespace around it (RFC 9110 5.5): padded Mcp-Name,
    Mcp-Method and MCP-Protocol-Version values still match the body."""
    msg = request(1, "tools/call", {"name": "test_simple_text", "arguments": {}})
    head = headers(
        msg, **{"Mcp-Name": "  test_simple_text\t", "Mcp-Method": " tools/call ", "MCP-Protocol-Version": f"{V} "}
    )
    status, body = await raw_post(mesh, "/servers/conf/mcp", head, orjson.dumps(msg))
    assert status == 200, body
    assert body["result"]["content"][0]["type"] == "text"


async def test_tasks_requests_must_name_their_task_in_mcp_name(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    """The tasks extension (SEP-2663): Mcp-Name mirrors params.taskId of tasks/get, update and cancel."""
    for method in ("tasks/get", "tasks/update", "tasks/cancel"):
        msg = request(1, method, {"taskId": "task-1"})
        for wrong in ({"Mcp-Name": "task-2"}, {"Mcp-Name": None}):
            reply = await post(http, mesh.url("conf"), msg, **wrong)
            assert reply.status_code == 400 and error_of(reply)["code"] == -32020, (method, wrong)
        named = await post(http, mesh.url("conf"), msg, **{"Mcp-Name": "task-1"})
        assert error_of(named)["code"] != -32020, method  # past the headers: the server answers


async def test_unsupported_version_gets_400_with_the_supported_list(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    msg = request(1, "tools/list", **{"io.modelcontextprotocol/protocolVersion": "2099-01-01"})
    reply = await post(http, mesh.url("conf"), msg, **{"MCP-Protocol-Version": "2099-01-01"})
    assert reply.status_code == 400
    err = error_of(reply)
    assert err["code"] == -32022
    assert err["data"] == {"supported": [V], "requested": "2099-01-01"}


async def test_handshake_era_methods_and_unknown_methods_get_404(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    for method in ("ping", "initialize", "logging/setLevel", "resources/subscribe"):
        reply = await post(http, mesh.url("conf"), request(1, method))
        assert reply.status_code == 404 and error_of(reply)["code"] == -32601, method
    unknown = await post(http, mesh.url("conf"), request(2, "no/such/method"))  # the server itself says so
    assert unknown.status_code == 404 and error_of(unknown)["code"] == -32601


async def test_batches_and_posted_responses_get_400_and_notifications_202(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    msg = request(1, "tools/list")
    batch = await http.post(mesh.url("conf"), content=orjson.dumps([msg]), headers=headers(msg))
    assert batch.status_code == 400
    answer = {"jsonrpc": "2.0", "id": 5, "result": {}}
    response = await http.post(mesh.url("conf"), content=orjson.dumps(answer), headers=headers(msg))
    assert response.status_code == 400
    note = {"jsonrpc": "2.0", "method": "notifications/whatever", "params": {}}
    accepted = await http.post(mesh.url("conf"), content=orjson.dumps(note), headers=headers(msg))
    assert accepted.status_code == 202 and accepted.content == b""


async def test_discover_answers_with_versions_capabilities_cache_rules_and_server_info(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    reply = await post(http, mesh.url("conf"), request(1, "server/discover"))
    assert reply.status_code == 200
    assert "mcp-session-id" not in reply.headers
    found = reply.json()["result"]
    assert found["supportedVersions"] == [V]
    assert found["resultType"] == "complete"
    assert found["ttlMs"] >= 0 and found["cacheScope"] == "private"
    assert {"tools", "prompts", "resources"} <= set(found["capabilities"])
    assert found["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcpmesh-conformance-fixture"


async def test_results_from_a_handshake_era_server_get_the_2026_fields(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    listing = (await post(http, mesh.url("conf"), request(1, "tools/list"))).json()["result"]
    assert listing["resultType"] == "complete" and listing["cacheScope"] == "private" and listing["ttlMs"] == 0
    assert listing["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcpmesh-conformance-fixture"
    read = await post(http, mesh.url("conf"), request(2, "resources/read", {"uri": "test://static-text"}))
    assert read.json()["result"]["cacheScope"] == "private"
    called = await post(http, mesh.url("conf"), request(3, "tools/call", {"name": "test_simple_text", "arguments": {}}))
    result = called.json()["result"]
    assert result["resultType"] == "complete" and "ttlMs" not in result


async def test_session_ids_are_never_minted_nor_honoured(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    msg = request(1, "tools/list")
    reply = await post(http, mesh.url("conf"), msg, **{"Mcp-Session-Id": "made-up"})
    assert reply.status_code == 200 and "mcp-session-id" not in reply.headers
    assert len(mesh.mesh.store) == 0


async def test_logs_reach_a_2026_request_only_when_it_asked_for_a_level(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    call = {"name": "log_levels", "arguments": {"tag": "t"}}
    quiet = await post(http, mesh.url("iso"), request(1, "tools/call", call))
    assert quiet.headers["content-type"] == "application/json"  # nothing preceded the result
    assert quiet.json()["result"]["content"][0]["text"] == "logged t"
    loud = await post(
        http, mesh.url("iso"), request(2, "tools/call", call, **{"io.modelcontextprotocol/logLevel": "warning"})
    )
    messages = [orjson.loads(line[5:]) for line in loud.text.splitlines() if line.startswith("data:")]
    levels = [m["params"]["level"] for m in messages if m.get("method") == "notifications/message"]
    assert levels == ["warning", "error", "critical", "alert", "emergency"]
    assert messages[-1]["id"] == 2 and messages[-1]["result"]["resultType"] == "complete"


async def _state(http: httpx.AsyncClient, mesh: RunningMesh) -> dict[str, Any]:
    reply = await post(http, mesh.url("iso"), request("state", "tools/call", {"name": "state", "arguments": {}}))
    return json.loads(reply.json()["result"]["content"][0]["text"])  # type: ignore[no-any-return]


@pytest.mark.parametrize("streaming", [False, True], ids=["closed-while-waiting", "closed-mid-sse"])
async def test_closing_the_response_stream_cancels_the_request_at_the_server(
    http: httpx.AsyncClient, mesh: RunningMesh, streaming: bool
) -> None:
    key = f"held-{streaming}"
    meta = {"progressToken": "p"} if streaming else {}
    msg = request(7, "tools/call", {"name": "block", "arguments": {"key": key}}, **meta)
    mux = mesh.mesh.supervisor.servers["iso"].mux  # type: ignore[attr-defined]
    reached_server = anyio.Event()

    async def hold() -> None:
        async with httpx.AsyncClient(timeout=20) as own:  # its own connection, closed on cancel
            async with own.stream("POST", mesh.url("iso"), content=orjson.dumps(msg), headers=headers(msg)) as reply:
                assert reply.headers["content-type"].startswith("text/event-stream")
                async for line in reply.aiter_lines():
                    if line.startswith("data:"):
                        reached_server.set()  # progress step 0: the server has the call
                await anyio.sleep_forever()

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            if streaming:
                await reached_server.wait()
            else:  # no progress token: the gateway is still waiting to choose JSON or SSE
                while not mux.calls:  # noqa: ASYNC110  # the gateway exposes no event for this
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()  # the client goes away
        while key not in (state := await _state(http, mesh))["cancelled"]:  # noqa: ASYNC110
            await anyio.sleep(0.02)
    assert len(state["cancel_requests"]) == 1
    assert not mux.calls  # nothing left in flight at the gateway


async def test_listen_acknowledges_first_then_carries_only_the_requested_tagged_notifications(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    wanted = {"toolsListChanged": True, "resourceSubscriptions": ["iso://mine"], "futureExtension": True}
    listen = request("L1", "subscriptions/listen", {"notifications": wanted})
    received: list[dict[str, Any]] = []
    with anyio.fail_after(15):
        async with httpx.AsyncClient(timeout=20) as own:
            async with own.stream("POST", mesh.url("iso"), content=orjson.dumps(listen), headers=headers(listen)) as s:
                assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
                lines = s.aiter_lines()

                async def next_message() -> dict[str, Any]:
                    async for line in lines:
                        if line.startswith("data:"):
                            return orjson.loads(line[5:])  # type: ignore[no-any-return]
                    raise AssertionError("listen stream ended")

                ack = await next_message()
                assert ack["method"] == "notifications/subscriptions/acknowledged"
                assert ack["params"]["notifications"] == {
                    "toolsListChanged": True,
                    "resourceSubscriptions": ["iso://mine"],
                }
                assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1"
                for name, args in [
                    ("touch", {"uri": "iso://other"}),
                    ("change_lists", {}),
                    ("touch", {"uri": "iso://mine"}),
                ]:
                    done = await post(
                        http, mesh.url("iso"), request(name, "tools/call", {"name": name, "arguments": args})
                    )
                    assert done.status_code == 200
                received.append(await next_message())
                received.append(await next_message())
    assert [m["method"] for m in received] == ["notifications/tools/list_changed", "notifications/resources/updated"]
    assert received[1]["params"]["uri"] == "iso://mine"
    assert all(m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1" for m in received)
    with anyio.fail_after(10):
        mux = mesh.mesh.supervisor.servers["iso"].mux  # type: ignore[attr-defined]
        while mux.subscriptions.listeners or mux.subscriptions.by_uri:  # noqa: ASYNC110  # closing the stream unsubscribes
            await anyio.sleep(0.02)


async def test_listen_without_a_filter_object_is_invalid_params(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    reply = await post(http, mesh.url("iso"), request(1, "subscriptions/listen", {"notifications": "all"}))
    assert reply.status_code == 400 and error_of(reply)["code"] == -32602


# -- input required (MRTR): a handshake-era server asks a 2026-07-28 client for input mid-call --------


async def answer_elicitation(context: Any, params: Any) -> Any:
    import mcp_types as types

    return types.ElicitResult(action="accept", content={"answer": f"yes to {params.message}"})


async def answer_sampling(context: Any, params: Any) -> Any:
    import mcp_types as types

    prompt = params.messages[0].content.text
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"<{prompt}>"), model="m"
    )


async def test_sdk_2026_client_completes_calls_that_ask_for_elicitation_and_sampling(mesh: RunningMesh) -> None:
    import mcp

    with anyio.fail_after(30):
        async with mcp.Client(
            mesh.url("iso"),
            mode="2026-07-28",
            elicitation_callback=answer_elicitation,
            sampling_callback=answer_sampling,
        ) as client:
            elicited = await client.call_tool("elicit", {"message": "proceed?"})
            assert elicited.content[0].text == 'elicited: accept {"answer": "yes to proceed?"}'  # type: ignore[union-attr]
            sampled = await client.call_tool("sample", {"prompt": "hi"})
            assert sampled.content[0].text == "sampled: <hi>"  # type: ignore[union-attr]
        fixture = await _conformance_elicitation(mesh)
    assert fixture.startswith("User response: action=accept")
    assert not mesh.mesh.supervisor.servers["iso"].mux.inputs.waiting  # type: ignore[attr-defined]


async def _conformance_elicitation(mesh: RunningMesh) -> str:
    import mcp

    async with mcp.Client(mesh.url("conf"), mode="2026-07-28", elicitation_callback=answer_elicitation) as client:
        reply = await client.call_tool("test_elicitation", {"message": "name?"})
        return reply.content[0].text  # type: ignore[union-attr, no-any-return]


async def _ask(http: httpx.AsyncClient, mesh: RunningMesh, client_name: str = "raw") -> dict[str, Any]:
    """Start an elicit call as a raw 2026 client; return the input-required result."""
    msg = request(
        1,
        "tools/call",
        {"name": "elicit", "arguments": {"message": "m"}},
        **{
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
            "io.modelcontextprotocol/clientInfo": {"name": client_name, "version": "1"},
        },
    )
    reply = await post(http, mesh.url("iso"), msg)
    asked = reply.json()["result"]
    assert asked["resultType"] == "input_required"
    assert [r["method"] for r in asked["inputRequests"].values()] == ["elicitation/create"]
    return asked  # type: ignore[no-any-return]


def _retry(asked: dict[str, Any], state: str, client_name: str = "raw", request_id: Any = 2) -> dict[str, Any]:
    key = next(iter(asked["inputRequests"]))
    answer = {"action": "accept", "content": {"answer": "raw"}}
    return request(
        request_id,
        "tools/call",
        {
            "name": "elicit",
            "arguments": {"message": "m"},
            "inputResponses": {key: answer},
            "requestState": state,
        },
        **{
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
            "io.modelcontextprotocol/clientInfo": {"name": client_name, "version": "1"},
        },
    )


async def test_a_forged_tampered_foreign_or_expired_request_state_is_refused(
    http: httpx.AsyncClient, mesh: RunningMesh
) -> None:
    url = mesh.url("iso")
    asked = await _ask(http, mesh)
    state: str = asked["requestState"]
    body, mac = state.split(".")[1:]
    forged_payload = base64.urlsafe_b64encode(b'{"h":"x","c":"y","m":"tools/call","n":"elicit","e":9e99}').decode()
    attempts = {
        "forged": "mcpmesh1." + forged_payload.rstrip("=") + "." + mac,
        "tampered": state[:-2] + ("AA" if not state.endswith("AA") else "BB"),
        "foreign": None,  # the genuine state, presented by another caller
        "made-up": "anything at all",
    }
    for what, token in attempts.items():
        retry = _retry(asked, token or state, client_name="intruder" if what == "foreign" else "raw", request_id=what)
        reply = await post(http, url, retry)
        assert reply.status_code == 400, what
        assert error_of(reply)["code"] == -32602, what
    finished = await post(http, url, _retry(asked, state))  # the genuine retry still completes
    assert finished.json()["result"]["content"][0]["text"] == 'elicited: accept {"answer": "raw"}'
    replayed = await post(http, url, _retry(asked, state, request_id=3))  # and only once
    assert replayed.status_code == 400 and "no waiting request" in error_of(replayed)["message"]

    mesh.mesh.supervisor.servers["iso"].mux.inputs.sealer.ttl = -1.0  # type: ignore[attr-defined]  # issue expired states
    stale = await _ask(http, mesh)
    expired = await post(http, url, _retry(stale, stale["requestState"], request_id=4))
    assert expired.status_code == 400 and "expired" in error_of(expired)["message"]
    mux = mesh.mesh.supervisor.servers["iso"].mux  # type: ignore[attr-defined]
    with anyio.fail_after(10):
        while mux.inputs.waiting or mux.calls:  # noqa: ASYNC110  # the server is released when the state expires
            await anyio.sleep(0.02)


async def test_recognized_param_headers_must_mirror_their_arguments(http: httpx.AsyncClient, mesh: RunningMesh) -> None:
    url = mesh.url("iso")
    args = {"region": "eu-west", "count": 3, "note": "free"}
    msg = request(1, "tools/call", {"name": "regional", "arguments": args})
    good = {"Mcp-Param-Region": "eu-west", "Mcp-Param-Count": "3", "Mcp-Param-Unknown": "ignored"}
    with anyio.fail_after(10):
        while "regional" not in mesh.mesh.supervisor.servers["iso"].mux.tool_params:  # type: ignore[attr-defined]  # noqa: ASYNC110
            await anyio.sleep(0.02)  # learned from the gateway's own tools/list at start
    ok = await post(http, url, msg, **good)
    assert ok.status_code == 200 and json.loads(ok.json()["result"]["content"][0]["text"]) == args
    encoded = "=?base64?" + base64.b64encode(b"eu-west").decode() + "?="
    assert (await post(http, url, msg, **{**good, "Mcp-Param-Region": encoded})).status_code == 200
    for bad in ({"Mcp-Param-Region": "us-east"}, {"Mcp-Param-Count": "4"}, {"Mcp-Param-Region": None}):
        reply = await post(http, url, msg, **{**good, **bad})
        assert reply.status_code == 400 and error_of(reply)["code"] == -32020, bad
    without_count = request(2, "tools/call", {"name": "regional", "arguments": {"region": "eu-west"}})
    assert (await post(http, url, without_count, **{"Mcp-Param-Region": "eu-west"})).status_code == 200
    stray = await post(http, url, without_count, **{"Mcp-Param-Region": "eu-west", "Mcp-Param-Count": "1"})
    assert stray.status_code == 400 and error_of(stray)["code"] == -32020


async def test_a_session_mode_server_gives_each_2026_request_a_process_of_its_own() -> None:
    servers = {"own": {**fixture_server("faulty_server.py"), "sharing": "session"}}
    async with running_mesh(servers) as mesh, httpx.AsyncClient(timeout=20) as http:
        server = mesh.mesh.supervisor.servers["own"]
        discover = await post(http, mesh.url("own"), request(1, "server/discover"))
        assert discover.json()["result"]["supportedVersions"] == [V]
        pids = []
        for n in range(2):
            reply = await post(http, mesh.url("own"), request(n, "tools/call", {"name": "pids", "arguments": {}}))
            pids.append(json.loads(reply.json()["result"]["content"][0]["text"])["pid"])
            assert reply.json()["result"]["resultType"] == "complete"
        assert pids[0] != pids[1]
        with anyio.fail_after(15):
            while len(server.processes) > 1:  # type: ignore[attr-defined]  # noqa: ASYNC110  # back to the warm spare
                await anyio.sleep(0.05)
        live = {p.pid for p in server.processes}  # type: ignore[attr-defined]
        assert not live & set(pids)


async def test_sdk_2026_client_works_against_session_mode_servers() -> None:
    import mcp

    from tests.conftest import everything_server, time_server

    servers = {
        "time": {**time_server(), "sharing": "session"},
        "everything": {**everything_server(), "sharing": "session"},
    }
    async with running_mesh(servers) as mesh:
        async with mcp.Client(mesh.url("time"), mode="2026-07-28") as client:
            reply = await client.call_tool("get_current_time", {"timezone": "UTC"})
            assert '"timezone": "UTC"' in reply.content[0].text  # type: ignore[union-attr]
        async with mcp.Client(mesh.url("everything"), mode="2026-07-28") as client:
            assert (await client.call_tool("echo", {"message": "own"})).content[0].text == "Echo: own"  # type: ignore[union-attr]


async def test_with_stateless_requests_off_2026_requests_get_a_plain_400_and_clients_fall_back() -> None:
    import mcp

    async with running_mesh({"conf": conformance_server()}, stateless_requests=False) as mesh:
        async with httpx.AsyncClient(timeout=20) as http:
            reply = await post(http, mesh.url("conf"), request(1, "tools/list"))
            assert reply.status_code == 400 and reply.json()["error"]["code"] == -32600  # not a 2026 error
        async with mcp.Client(mesh.url("conf")) as client:  # auto mode: falls back to the handshake
            assert "test_simple_text" in {t.name for t in (await client.list_tools()).tools}
        assert len(mesh.mesh.store) == 0  # it used (and closed) a session
