"""10,000 JSON-RPC-ish messages from hypothesis, valid and not, POSTed over real HTTP to one mesh
of real servers (in handshake sessions and on the 2026-07-28 path): every answer is well-formed,
and afterwards the invariants hold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chaos.invariants import assert_invariants, calls_in_flight
from tests.conftest import RunningMesh, everything_server, running_mesh, time_server
from tests.front.test_stateless import V

pytestmark = [pytest.mark.chaos, pytest.mark.node]

MESSAGES = 10_000
PER_EXAMPLE = 8  # messages per hypothesis example, sent at once: the mesh waits on its servers, not the CPU
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": V, "io.modelcontextprotocol/clientCapabilities": {}}
METHODS = [
    "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read", "prompts/list",
    "prompts/get", "completion/complete", "logging/setLevel", "server/discover", "notifications/initialized",
    "notifications/cancelled", "notifications/progress", "resources/subscribe", "tasks/get", "no/such/method",
]  # fmt: skip
TOOLS = ["get_current_time", "convert_time", "echo", "get-sum", "no-such-tool"]  # never the slow ones
INT64 = 2**63
PARSE_ERROR = -32700
ANSWER_WITHIN = 1.0  # seconds a server gets per request: every call the fuzz makes is a quick one

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
odd_text = st.text(max_size=30) | st.sampled_from(["", "\u0000", "\u202e", "\ufeff", "𝔘𝔫𝔦", "\U0010ffff", "é" * 50])
big_int = st.integers(-(2**70), 2**70)
scalar = st.none() | st.booleans() | big_int | st.floats(allow_nan=False) | odd_text
json_value = st.recursive(
    scalar, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(odd_text, kids, max_size=4), max_leaves=12
)
ids = st.integers(-INT64, INT64 - 1) | big_int | st.floats(allow_nan=False) | odd_text | st.none() | st.booleans()
ids |= st.sampled_from([[1], {"a": 1}])
method = st.sampled_from(METHODS) | odd_text | st.integers()
arguments = st.dictionaries(st.sampled_from(["message", "a", "b", "timezone"]), json_value, max_size=3)
meta = st.dictionaries(st.sampled_from(["progressToken", *ENVELOPE]), json_value, max_size=2)
tool_call = st.fixed_dictionaries({"name": st.sampled_from(TOOLS), "arguments": arguments}, optional={"_meta": meta})
params = st.none() | json_value | tool_call


@st.composite
def message(draw: st.DrawFn, modern: bool) -> Any:
    """A request, notification or response: some fields right, some wrong, some missing."""
    msg: dict[str, Any] = {}
    for key, value in (("jsonrpc", st.just("2.0") | scalar), ("id", ids), ("method", method), ("params", params)):
        if draw(st.integers(0, 9)) > 1:  # each field is there 80 % of the time
            msg[key] = draw(value)
    if modern and isinstance(msg.get("params"), dict) and draw(st.booleans()):
        msg["params"] = {**msg["params"], "_meta": {**ENVELOPE, **msg["params"].get("_meta", {})}}
    shape = draw(st.integers(0, 9))
    if shape == 0:  # a response to nothing
        return {"jsonrpc": "2.0", "id": msg.get("id", 1), draw(st.sampled_from(["result", "error"])): draw(json_value)}
    if shape == 1:  # a batch
        return [msg, *draw(st.lists(st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "method": method}), max_size=3))]
    return msg


def raw_body(draw: st.DrawFn, msg: Any) -> tuple[bytes, Any]:
    """The message as JSON, or a ping nested past any limit, or not JSON at all; and what was sent."""
    kind = draw(st.integers(0, 19))
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    if kind == 0:
        depth = draw(st.integers(30, 3000))
        nested = "[" * depth + "]" * depth
        return ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":' + nested + "}}").encode(), ping
    if kind == 1:
        return draw(st.binary(max_size=200)), None
    if kind == 2:
        return b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"s":"\\ud800"}}', None  # a lone surrogate: no JSON
    return json.dumps(msg, ensure_ascii=draw(st.booleans())).encode(), msg


def sendable(value: Any) -> bool:
    """A header value h11 sends: visible ASCII and spaces, none at either end."""
    return isinstance(value, str) and value.isascii() and value.isprintable() and value == value.strip()


@st.composite
def posts(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str], Any]:
    """Where to post (a session's URL, or the 2026-07-28 path), what, and with which headers."""
    target = draw(st.sampled_from(["time", "everything", "solo", "time-2026", "everything-2026"]))
    modern = target.endswith("-2026")
    msg = draw(message(modern))
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if modern:
        method_of = msg.get("method") if isinstance(msg, dict) else None
        headers["MCP-Protocol-Version"] = draw(st.just(V) | st.just("2025-11-25") | header_text)
        wanted = method_of if sendable(method_of) else None
        for name, value in (("Mcp-Method", wanted), ("Mcp-Name", None)):
            choice = draw(st.integers(0, 3))
            if choice == 0 and value is not None:
                headers[name] = value
            elif choice == 1:
                headers[name] = draw(header_text)
        if isinstance(msg, dict) and isinstance(msg.get("params"), dict) and draw(st.booleans()):
            name_of = msg["params"].get("name")
            if sendable(name_of):
                headers["Mcp-Name"] = name_of
    body, sent = raw_body(draw, msg)
    return target.removesuffix("-2026"), body, headers, sent if isinstance(sent, dict) else None


def valid_id(msg: Any) -> bool:
    """A request (it names a method) with an id JSON-RPC allows: its answer must carry that id."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or not isinstance(msg.get("method"), str):
        return False  # not a JSON-RPC 2.0 request: its id is not one to echo (the answer's id is null)
    value = msg.get("id")
    return isinstance(value, str) or (type(value) is int and -INT64 <= value < INT64)


def check_answer(reply: httpx.Response, msg: dict[str, Any] | None) -> None:
    """Well-formed HTTP, never a 5xx; JSON-RPC errors well-formed, with the request's id if it had one."""
    assert reply.status_code < 500, (reply.status_code, reply.text[:500], msg)
    kind = reply.headers.get("content-type", "")
    if not reply.content:
        return
    if kind.startswith("text/event-stream"):
        answers = [json.loads(line[5:]) for line in reply.text.splitlines() if line.startswith("data:")]
    else:
        assert kind.startswith("application/json"), (reply.status_code, kind, reply.text[:200])
        body = reply.json()
        answers = body if isinstance(body, list) else [body]
    for answer in answers:
        assert isinstance(answer, dict) and answer.get("jsonrpc") == "2.0", answer
        if "error" in answer:
            error = answer["error"]
            assert type(error.get("code")) is int and isinstance(error.get("message"), str), answer
            if error["code"] == PARSE_ERROR:  # nothing was read, so no id either (JSON-RPC 2.0 section 5)
                assert answer["id"] is None, answer
                continue
        if valid_id(msg) and ("result" in answer or "error" in answer):
            # Refused at the HTTP layer (no session, a bad version header: 4xx) the id may be null;
            # any id given is the request's, and every answer the JSON-RPC layer gives carries it.
            if reply.status_code == 200 or answer.get("id") is not None:
                assert answer.get("id") == msg["id"], (reply.status_code, answer, msg)  # type: ignore[index]


def open_session(http: httpx.Client, url: str) -> str:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    reply = http.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT}, headers=headers)
    assert reply.status_code == 200, reply.text
    session = reply.headers["mcp-session-id"]
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert http.post(url, json=done, headers={**headers, "Mcp-Session-Id": session}).status_code == 202
    return session


@pytest.fixture(scope="module")
def fuzzed_mesh() -> Iterator[tuple[anyio.from_thread.BlockingPortal, RunningMesh]]:
    servers = {
        "time": time_server(),
        "everything": everything_server(),
        "solo": {**time_server("handshake"), "sharing": "session"},
    }
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        # A message a server never answers costs request_timeout (array params did, before they were refused):
        # they cost request_timeout each, so it is short here.
        bounded = {name: {**config, "request_timeout": ANSWER_WITHIN} for name, config in servers.items()}
        with portal.wrap_async_context_manager(running_mesh(bounded)) as mesh:
            yield portal, mesh


@pytest.mark.timeout(300)
def test_ten_thousand_fuzzed_messages_get_well_formed_answers_and_leave_nothing_behind(
    fuzzed_mesh: tuple[anyio.from_thread.BlockingPortal, RunningMesh],
) -> None:
    portal, mesh = fuzzed_mesh
    sent = 0
    limits = httpx.Limits(max_connections=PER_EXAMPLE, keepalive_expiry=1.0)  # before the mesh closes them (5 s)
    with httpx.Client(timeout=30, limits=limits) as http, ThreadPoolExecutor(PER_EXAMPLE) as senders:
        sessions = {name: open_session(http, mesh.url(name)) for name in ("time", "everything", "solo")}

        @settings(
            max_examples=MESSAGES // PER_EXAMPLE,
            deadline=None,
            derandomize=True,  # the same 10,000 messages on every run: CI is reproducible
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(posts(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
        def fuzz(batch: list[tuple[str, bytes, dict[str, str], Any]]) -> None:
            nonlocal sent
            for reply, (_, _, _, msg) in zip(senders.map(send, batch), batch, strict=True):
                check_answer(reply, msg)
                sent += 1

        def send(post: tuple[str, bytes, dict[str, str], Any]) -> httpx.Response:
            server, body, headers, _ = post
            if "MCP-Protocol-Version" not in headers:  # a handshake-era message: in that server's session
                headers = {**headers, "Mcp-Session-Id": sessions[server], "MCP-Protocol-Version": "2025-11-25"}
            return http.post(mesh.url(server), content=body, headers=headers)

        fuzz()
    assert sent >= MESSAGES
    portal.call(assert_invariants, mesh, "after the fuzz")
    assert portal.call(calls_in_flight, mesh.mesh) == []
