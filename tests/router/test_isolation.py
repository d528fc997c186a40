"""Hostile isolation: many client sessions on ONE shared server process, each seeing only its own traffic.

Raw HTTP (httpx against a real mesh) so ids, progress tokens and cancellations are exactly what the
test says: sessions reuse each other's request ids (`1` and `"1"`) and progress tokens, cancel each
other's ids, answer each other's server requests, subscribe to different resources and set
different log levels. The server is tests/fixtures/isolation_server.py, whose gates (`rendezvous`,
`block`/`release`) order events so no test sleeps, and whose `change_lists` tool is the barrier that
flushes every session's GET stream before the GET streams are checked (MCP-NOTES §5.3, §9 items
39-45 and 7).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import httpx
import mcp
import pytest

from tests.conftest import RunningMesh, everything_server, fixture_server, running_mesh

pytestmark = pytest.mark.anyio

PROTOCOL = "2025-11-25"
WAIT = 10.0  # seconds any one wait may take
TEST_BUDGET = 30.0  # seconds a whole test may take
LIST_CHANGED = tuple(f"notifications/{kind}/list_changed" for kind in ("tools", "resources", "prompts"))
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
SAMPLING = {"sampling": {}}
ELICITATION = {"elicitation": {}}

Message = dict[str, Any]
OnMessage = Callable[[Message], Awaitable[None]]


def isolation_server() -> dict[str, Any]:
    return fixture_server("isolation_server.py")


# -- expected messages -------------------------------------------------------------------------
def progress(token: Any, step: int, message: str) -> Message:
    params = {"progressToken": token, "progress": step, "message": message}
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}


def tool_result(request_id: Any, text: str, *, is_error: bool = False) -> Message:
    res: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if is_error:
        res["isError"] = True
    return {"jsonrpc": "2.0", "id": request_id, "result": res}


def log_message(level: str, data: str) -> Message:
    params = {"level": level, "logger": "isolation-fixture", "data": data}
    return {"jsonrpc": "2.0", "method": "notifications/message", "params": params}


def resource_updated(uri: str) -> Message:
    return {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}


def sampling_answer(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": {"type": "text", "text": text}, "model": "test", "stopReason": "endTurn"}


# -- the raw client ----------------------------------------------------------------------------
@dataclass
class Exchange:
    """Everything one POST returned, in order; the last message is the response."""

    request: Message
    content_type: str
    messages: list[Message]

    @property
    def response(self) -> Message:
        last = self.messages[-1]
        assert "method" not in last, f"the POST stream did not end with a response: {self.messages}"
        return last


@dataclass
class Pending:
    """A request running in the background: `first` is set by its first message, `done` by its end."""

    first: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    exchange: Exchange | None = None

    async def started(self) -> None:
        with anyio.fail_after(WAIT):
            await self.first.wait()

    async def result(self) -> Exchange:
        with anyio.fail_after(WAIT):
            await self.done.wait()
        assert self.exchange is not None
        return self.exchange


async def read_sse(response: httpx.Response, on_message: OnMessage) -> None:
    """Parse `event: message` / `data:` events as they arrive; `:` comments are keep-alives."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                assert event == "message", f"unexpected SSE event type {event!r}"
                await on_message(json.loads("\n".join(data)))
            event, data = "message", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


class RawSession:
    """One client session spoken by hand: exact ids, exact tokens, every message recorded."""

    def __init__(self, swarm: Swarm, label: str):
        self.swarm = swarm
        self.http = swarm.http
        self.url = swarm.url
        self.label = label
        self.session_id = ""
        self.get_messages: list[Message] = []
        self._get_changed = anyio.Event()
        self.has_stream = False
        self.barriers_seen_from = 0  # swarm barriers that happened before this GET stream opened
        self.barriers_until: int | None = None  # swarm barriers that happened before this session ended
        self.subscribed: set[str] = set()  # every URI this session ever subscribed to
        self.allow_get_requests = False  # a server request may legitimately arrive on the GET stream
        self._ids = 0

    def next_id(self) -> str:
        """A fresh id for bookkeeping requests, never equal to the ids the tests fight over."""
        self._ids += 1
        return f"{self.label}-{self._ids}"

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
            headers["MCP-Protocol-Version"] = PROTOCOL
        return headers

    async def initialize(self, capabilities: dict[str, Any]) -> Message:
        params = {
            "protocolVersion": PROTOCOL,
            "capabilities": capabilities,
            "clientInfo": {"name": f"hostile-{self.label}", "version": "1"},
        }
        body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
        reply = await self.http.post(self.url, json=body, headers=self.headers())
        assert reply.status_code == 200, reply.text
        self.session_id = reply.headers["mcp-session-id"]
        message: Message = reply.json()
        assert message["id"] == 1 and message["result"]["protocolVersion"] == PROTOCOL, message
        await self.notify("notifications/initialized")
        return message

    async def post(self, body: Message) -> httpx.Response:
        return await self.http.post(self.url, json=body, headers=self.headers())

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        body: Message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        reply = await self.post(body)
        assert reply.status_code == 202, (reply.status_code, reply.text)

    async def respond(self, request_id: Any, result: dict[str, Any]) -> None:
        reply = await self.post({"jsonrpc": "2.0", "id": request_id, "result": result})
        assert reply.status_code == 202, (reply.status_code, reply.text)

    async def request(
        self, request_id: Any, method: str, params: dict[str, Any] | None = None, on_message: OnMessage | None = None
    ) -> Exchange:
        """POST one request; collect every message of its reply, JSON or SSE, until the stream ends."""
        body: Message = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        messages: list[Message] = []

        async def collect(msg: Message) -> None:
            messages.append(msg)
            if on_message is not None:
                await on_message(msg)

        async with self.http.stream("POST", self.url, json=body, headers=self.headers()) as reply:
            assert reply.status_code == 200, (reply.status_code, await reply.aread())
            content_type = reply.headers["content-type"].split(";")[0].strip()
            if content_type == "application/json":
                await collect(json.loads(await reply.aread()))
            else:
                assert content_type == "text/event-stream", content_type
                await read_sse(reply, collect)
        assert messages, f"{method} {request_id!r}: empty reply"
        return Exchange(body, content_type, messages)

    async def call(
        self, request_id: Any, tool: str, args: dict[str, Any], token: Any = None, on_message: OnMessage | None = None
    ) -> Exchange:
        params: dict[str, Any] = {"name": tool, "arguments": args}
        if token is not None:
            params["_meta"] = {"progressToken": token}
        return await self.request(request_id, "tools/call", params, on_message)

    def start(
        self, request_id: Any, tool: str, args: dict[str, Any], token: Any = None, on_message: OnMessage | None = None
    ) -> Pending:
        """Call a tool in the background of the swarm."""
        pending = Pending()

        async def first_then(msg: Message) -> None:
            pending.first.set()
            if on_message is not None:
                await on_message(msg)

        async def run() -> None:
            pending.exchange = await self.call(request_id, tool, args, token, first_then)
            pending.done.set()

        self.swarm.tg.start_soon(run)
        return pending

    async def subscribe(self, uri: str, *, unsubscribe: bool = False) -> None:
        method = "resources/unsubscribe" if unsubscribe else "resources/subscribe"
        rid = self.next_id()
        exchange = await self.request(rid, method, {"uri": uri})
        assert exchange.messages == [{"jsonrpc": "2.0", "id": rid, "result": {}}]
        if not unsubscribe:
            self.subscribed.add(uri)

    async def set_level(self, level: str) -> None:
        rid = self.next_id()
        exchange = await self.request(rid, "logging/setLevel", {"level": level})
        assert exchange.messages == [{"jsonrpc": "2.0", "id": rid, "result": {}}]

    # -- the standalone GET stream ---------------------------------------------------------------
    async def open_stream(self) -> None:
        async def reader(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            headers = {k: v for k, v in self.headers().items() if k != "Content-Type"}
            headers["Accept"] = "text/event-stream"
            async with self.http.stream("GET", self.url, headers=headers) as reply:
                assert reply.status_code == 200, (reply.status_code, await reply.aread())
                assert reply.headers["content-type"].startswith("text/event-stream")
                task_status.started()
                await read_sse(reply, self._on_get)

        self.barriers_seen_from = self.swarm.barriers
        with anyio.fail_after(WAIT):
            await self.swarm.tg.start(reader)
        self.has_stream = True

    async def delete(self) -> None:
        """End the session (HTTP DELETE); its GET stream is checked up to this point."""
        reply = await self.http.delete(self.url, headers=self.headers())
        assert reply.status_code == 200, reply.text
        self.barriers_until = self.swarm.barriers

    def barriers_seen(self) -> int:
        until = self.swarm.barriers if self.barriers_until is None else self.barriers_until
        return until - self.barriers_seen_from

    async def _on_get(self, msg: Message) -> None:
        self.get_messages.append(msg)
        self._get_changed.set()
        self._get_changed = anyio.Event()

    async def wait_get(self, predicate: Callable[[Message], bool], count: int = 1) -> list[Message]:
        """At least `count` GET-stream messages matching `predicate` (all of them, in order)."""
        with anyio.fail_after(WAIT):
            while True:
                found = [m for m in self.get_messages if predicate(m)]
                if len(found) >= count:
                    return found
                await self._get_changed.wait()

    def updates(self) -> list[str]:
        return [m["params"]["uri"] for m in self.get_messages if m.get("method") == "notifications/resources/updated"]


class Swarm:
    """The HTTP client, the background tasks and the sessions of one test, against one server."""

    def __init__(self, mesh: RunningMesh, server: str = "iso"):
        self.mesh = mesh
        self.server = server
        self.url = mesh.url(server)
        self.sessions: list[RawSession] = []
        self.barriers = 0
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Swarm:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        timeout = httpx.Timeout(WAIT, read=None)  # SSE streams may be quiet; waits are bounded by the tests
        self.http = await self._stack.enter_async_context(httpx.AsyncClient(timeout=timeout, limits=limits))
        self.tg = await self._stack.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        self.tg.cancel_scope.cancel()
        return await self._stack.__aexit__(*exc)

    @property
    def mux(self) -> Any:
        return self.mesh.mesh.supervisor.servers[self.server].mux  # type: ignore[attr-defined]

    async def open(self, *labels: str, capabilities: dict[str, Any] | None = None, stream: bool = True) -> Any:
        opened = []
        for label in labels:
            session = RawSession(self, label)
            await session.initialize(capabilities or {})
            if stream:
                await session.open_stream()
            self.sessions.append(session)
            opened.append(session)
        return opened[0] if len(opened) == 1 else opened

    @property
    def helper(self) -> RawSession:
        return next(s for s in self.sessions if s.barriers_until is None)

    async def state(self) -> dict[str, Any]:
        helper = self.helper
        exchange = await helper.call(helper.next_id(), "state", {})
        return json.loads(exchange.response["result"]["content"][0]["text"])  # type: ignore[no-any-return]

    async def barrier(self) -> None:
        """Every GET stream has received everything queued for it before this point."""
        helper = self.helper
        rid = helper.next_id()
        exchange = await helper.call(rid, "change_lists", {})
        assert exchange.messages == [tool_result(rid, "lists changed")]
        self.barriers += 1
        for session in self.sessions:
            if session.has_stream and session.barriers_until is None:
                await session.wait_get(lambda m: m.get("method") == LIST_CHANGED[2], session.barriers_seen())

    async def finish(self) -> None:
        """Flush every GET stream, then prove none carried anything but what its own session may see."""
        await self.barrier()
        for session in self.sessions:
            if session.has_stream:
                check_get_stream(session, session.barriers_seen())
        assert not self.mux.calls, "calls left in flight at the gateway"


def check_get_stream(session: RawSession, barriers: int) -> None:
    """No response, progress, log or foreign resource update; each list change exactly once per change."""
    kinds: Counter[str] = Counter()
    for msg in session.get_messages:
        method = msg.get("method")
        assert method is not None, f"{session.label}: a response on the GET stream: {msg}"
        if method in LIST_CHANGED:
            kinds[method] += 1
        elif method == "notifications/resources/updated":
            assert msg["params"]["uri"] in session.subscribed, f"{session.label}: foreign update {msg}"
        elif "id" in msg and session.allow_get_requests:
            assert str(msg["id"]).startswith("mcpmesh-s"), msg
        else:
            raise AssertionError(f"{session.label}: foreign traffic on the GET stream: {msg}")
    assert {k: kinds[k] for k in LIST_CHANGED} == dict.fromkeys(LIST_CHANGED, barriers), f"{session.label}: {kinds}"


@asynccontextmanager
async def hostile_mesh(servers: dict[str, dict[str, Any]] | None = None, server: str = "iso") -> AsyncIterator[Swarm]:
    """A mesh sharing one server process (isolation_server unless told), and a swarm on it; the whole test
    is bounded.

    A failure in the body is raised only after the mesh has shut down normally, so a failing (or
    xfailed) test leaves no server sockets behind to break a later test with a ResourceWarning.
    """
    failure: BaseException | None = None
    async with running_mesh(servers or {"iso": isolation_server()}) as mesh:
        try:
            with anyio.fail_after(TEST_BUDGET):
                async with Swarm(mesh, server) as swarm:
                    yield swarm
        except Exception as exc:
            failure = exc
    if failure is not None:
        while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
            failure = failure.exceptions[0]  # the task group's wrapper around the test's own assertion
        raise failure


# -- 1. identical request ids -------------------------------------------------------------------
async def test_four_sessions_sending_the_same_ids_at_once_each_get_exactly_their_own_result() -> None:
    ids = (1, "1")
    async with hostile_mesh() as swarm:
        sessions = await swarm.open("A", "B", "C", "D")
        pending = {
            (s.label, rid): s.start(rid, "rendezvous", {"group": "g", "size": 8, "text": f"{s.label} {rid!r}"})
            for s in sessions
            for rid in ids
        }
        for (label, rid), call in pending.items():
            exchange = await call.result()
            assert exchange.messages == [tool_result(rid, f"{label} {rid!r}")]
            assert type(exchange.response["id"]) is type(rid)
        state = await swarm.state()
        backend_ids = state["groups"]["g"]
        assert len(backend_ids) == 8 and len({json.dumps(i) for i in backend_ids}) == 8, backend_ids
        await swarm.finish()


async def test_a_session_reusing_its_own_in_flight_id_is_refused_and_its_first_call_is_untouched() -> None:
    async with hostile_mesh() as swarm:
        a, b = await swarm.open("A", "B")
        first = a.start(5, "block", {"key": "a5"}, token="t")
        others = b.start(5, "block", {"key": "b5"}, token="t")  # the same id on another session is fine
        await first.started()
        await others.started()
        again = await a.call(5, "rendezvous", {"group": "never", "size": 1, "text": "dup"})
        assert again.messages == [
            {
                "jsonrpc": "2.0",
                "id": 5,
                "error": {"code": -32600, "message": "Invalid Request: this id is already used by a request in flight"},
            }
        ]
        await a.call(a.next_id(), "release", {"key": "a5"})
        await a.call(a.next_id(), "release", {"key": "b5"})
        assert (await first.result()).messages == [progress("t", 0, "a5 started"), tool_result(5, "released a5")]
        assert (await others.result()).messages == [progress("t", 0, "b5 started"), tool_result(5, "released b5")]
        assert "never" not in (await swarm.state())["groups"], "the refused duplicate reached the server"
        await swarm.finish()


# -- 2. identical progress tokens ---------------------------------------------------------------
async def test_identical_progress_tokens_from_four_sessions_reach_only_their_own_call_and_none_after() -> None:
    calls = ((1, "tok"), (2, 1))  # per session: id 1 with token "tok", id 2 with token 1 (= its other id)
    async with hostile_mesh() as swarm:
        sessions = await swarm.open("A", "B", "C", "D")
        pending = {
            (s.label, rid, token): s.start(
                rid, "rendezvous", {"group": "p", "size": 8, "text": f"{s.label}{rid}"}, token
            )
            for s in sessions
            for rid, token in calls
        }
        for (label, rid, token), call in pending.items():
            text = f"{label}{rid}"
            exchange = await call.result()
            assert exchange.content_type == "text/event-stream"
            assert exchange.messages == [
                progress(token, 1, f"{text} step 1"),
                progress(token, 2, f"{text} step 2"),
                progress(token, 3, f"{text} step 3"),
                tool_result(rid, text),
            ]
        state = await swarm.state()
        assert len(state["tokens"]) == 8 and len({json.dumps(t) for t in state["tokens"]}) == 8, state["tokens"]
        assert "tok" not in state["tokens"], "a client's progress token reached the shared server unrewritten"
        # The server now reports progress on all 8 finished tokens and on the live one of this call,
        # which reuses "tok": only the live one may arrive, on this call's stream.
        replay = await sessions[0].call("replay", "replay_progress", {}, token="tok")
        assert replay.messages == [progress("tok", 99, "late"), tool_result("replay", "replayed 9")]
        assert swarm.mux.dropped["unmatched_progress"] == 8
        await swarm.finish()


async def test_a_float_progress_token_cannot_inject_progress_into_another_sessions_call() -> None:
    async with hostile_mesh({"everything": everything_server()}, "everything") as swarm:
        a, b = await swarm.open("A", "B", stream=False)
        victim = b.start(1, "trigger-long-running-operation", {"duration": 1.5, "steps": 3}, token="b")
        await victim.started()
        (call,) = swarm.mux.calls.values()
        assert call.backend_token == call.backend_id and isinstance(call.backend_id, int)
        # A guesses B's backend token (ids are sequential) and sends it as a float.
        await a.call(1, "trigger-long-running-operation", {"duration": 0.2, "steps": 2}, token=float(call.backend_id))
        messages = (await victim.result()).messages
        assert [m["params"] for m in messages[:-1]] == [
            {"progressToken": "b", "progress": step, "total": 3} for step in (1, 2, 3)
        ]
        assert messages[-1]["id"] == 1 and "result" in messages[-1]


# -- 3. cancellation ------------------------------------------------------------------------------
async def test_a_session_cannot_cancel_another_sessions_request_but_its_own_cancel_ends_its_own_call() -> None:
    async with hostile_mesh() as swarm:
        a, b = await swarm.open("A", "B")
        a7 = a.start(7, "block", {"key": "a7"}, token="same")
        b7 = b.start(7, "block", {"key": "b7"}, token="same")
        b9 = b.start(9, "block", {"key": "b9"}, token="other")
        for call in (a7, b7, b9):
            await call.started()

        await a.notify("notifications/cancelled", {"requestId": 9, "reason": "B's id, not mine"})
        await b.notify("notifications/cancelled", {"requestId": "9", "reason": "a string is not the int 9"})
        state = await swarm.state()
        assert state["cancelled"] == [] and state["cancel_requests"] == [], state
        assert swarm.mux.dropped["unknown_cancel"] == 2
        assert not b9.done.is_set() and not b7.done.is_set()

        await a.notify("notifications/cancelled", {"requestId": 7, "reason": "mine"})
        assert (await a7.result()).messages == [
            progress("same", 0, "a7 started"),
            {"jsonrpc": "2.0", "id": 7, "error": {"code": -32800, "message": "Request cancelled"}},
        ]
        state = await swarm.state()
        assert state["cancelled"] == ["a7"], state
        assert len(state["cancel_requests"]) == 1 and state["cancel_requests"][0] not in (7, "7"), state
        assert not b7.done.is_set(), "A's cancel of its own id 7 ended B's id 7"

        await a.call(a.next_id(), "release", {"key": "b7"})
        await a.call(a.next_id(), "release", {"key": "b9"})
        assert (await b7.result()).messages == [progress("same", 0, "b7 started"), tool_result(7, "released b7")]
        assert (await b9.result()).messages == [progress("other", 0, "b9 started"), tool_result(9, "released b9")]
        await swarm.finish()


async def test_a_session_that_ends_mid_call_cancels_only_its_own_call_on_the_shared_server() -> None:
    async with hostile_mesh() as swarm:
        a, b = await swarm.open("A", "B")
        doomed = a.start(1, "block", {"key": "a"}, token="t")
        survivor = b.start(1, "block", {"key": "b"}, token="t")
        await doomed.started()
        await survivor.started()
        await a.delete()
        assert (await doomed.result()).messages == [  # ended with the reason, nothing foreign
            progress("t", 0, "a started"),
            {"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "session ended: deleted by the client"}},
        ]
        state = await swarm.state()
        assert state["cancelled"] == ["a"] and len(state["cancel_requests"]) == 1, state
        await b.call(b.next_id(), "release", {"key": "b"})
        assert (await survivor.result()).messages == [progress("t", 0, "b started"), tool_result(1, "released b")]
        await swarm.finish()


# -- 4. resource subscriptions and list changes --------------------------------------------------
async def test_resource_updates_reach_only_subscribers_and_list_changes_reach_every_session() -> None:
    x, y, z = "iso://x", "iso://y", "iso://z"
    async with hostile_mesh() as swarm:
        a, b, c, d = await swarm.open("A", "B", "C", "D")
        await a.subscribe(x)
        await b.subscribe(y)
        await d.subscribe(x)
        assert (await swarm.state())["subscriptions"] == [x, y]
        for uri in (x, y, z):
            await c.call(c.next_id(), "touch", {"uri": uri})
        await swarm.barrier()
        assert (a.updates(), b.updates(), c.updates(), d.updates()) == ([x], [y], [], [x])

        await b.subscribe(x, unsubscribe=True)  # B never held x: this must not unsubscribe A or D
        assert (await swarm.state())["subscriptions"] == [x, y]
        await a.subscribe(x, unsubscribe=True)
        assert (await swarm.state())["subscriptions"] == [x, y], "D still holds x"
        await c.call(c.next_id(), "touch", {"uri": x})  # only D still holds x
        await d.subscribe(x, unsubscribe=True)
        await c.call(c.next_id(), "touch", {"uri": x})  # nobody holds x any more
        await swarm.barrier()
        assert (a.updates(), b.updates(), c.updates(), d.updates()) == ([x], [y], [], [x, x])
        assert (await swarm.state())["subscriptions"] == [y], "the last unsubscribe reached the server"
        assert [m for m in a.get_messages if m.get("method") == "notifications/resources/updated"] == [
            resource_updated(x)
        ]
        await swarm.finish()  # includes: each session saw every list change exactly once per change


async def test_roots_are_never_offered_to_a_shared_process_so_none_can_reach_another_client() -> None:
    """A shared process keeps the roots it is given and would answer every client with them: the
    gateway declares sampling and elicitation to it (routed to the one caller), never roots, even
    when every session has some to give."""
    async with hostile_mesh() as swarm:
        await swarm.open("A", "B", capabilities={"roots": {"listChanged": True}, "sampling": {}})
        declared = (await swarm.state())["client_capabilities"]
        assert declared == {"sampling": {}, "elicitation": {"form": {}, "url": {}}}
        await swarm.finish()


# -- 5. log levels ------------------------------------------------------------------------------
async def test_each_session_gets_logs_at_its_own_level_whatever_the_others_set() -> None:
    async with hostile_mesh() as swarm:
        a, b = await swarm.open("A", "B")
        await a.set_level("error")
        await b.set_level("debug")

        async def logs_of(session: RawSession, tag: str) -> list[Message]:
            rid = session.next_id()
            exchange = await session.call(rid, "log_levels", {"tag": tag})
            assert exchange.response == tool_result(rid, f"logged {tag}")
            return exchange.messages[:-1]

        assert await logs_of(b, "B") == [log_message(level, f"B:{level}") for level in LEVELS]
        assert await logs_of(a, "A") == [log_message(level, f"A:{level}") for level in LEVELS[4:]]
        assert await logs_of(b, "B2") == [log_message(level, f"B2:{level}") for level in LEVELS]

        await a.set_level("warning")
        await b.set_level("critical")
        assert await logs_of(b, "B3") == [log_message(level, f"B3:{level}") for level in LEVELS[5:]]
        assert await logs_of(a, "A2") == [log_message(level, f"A2:{level}") for level in LEVELS[3:]]
        await swarm.finish()


async def test_a_session_that_never_set_a_level_is_not_limited_by_another_sessions_level() -> None:
    async with hostile_mesh() as swarm:
        a = await swarm.open("A")
        await a.set_level("error")
        c = await swarm.open("C")  # joins after A's setLevel; never sets a level itself
        rid = c.next_id()
        exchange = await c.call(rid, "log_levels", {"tag": "C"})
        # Alone on the server, C gets every level this server sends by default.
        assert exchange.messages == [log_message(level, f"C:{level}") for level in LEVELS] + [
            tool_result(rid, "logged C")
        ]
        await swarm.finish()


async def test_logs_emitted_while_two_sessions_have_calls_in_flight_reach_nobody() -> None:
    async with hostile_mesh() as swarm:
        a, b = await swarm.open("A", "B")
        blocked = b.start(1, "block", {"key": "b"}, token="t")
        await blocked.started()
        exchange = await a.call(1, "log_levels", {"tag": "A"})
        assert exchange.messages == [tool_result(1, "logged A")]
        assert swarm.mux.dropped["unattributable_notification"] == len(LEVELS)
        await a.call(a.next_id(), "release", {"key": "b"})
        assert (await blocked.result()).messages == [progress("t", 0, "b started"), tool_result(1, "released b")]
        await swarm.finish()


async def test_a_log_caused_by_one_sessions_subscribe_is_not_delivered_to_another_sessions_call() -> None:
    async with hostile_mesh() as swarm:
        a, b = await swarm.open("A", "B")
        blocked = b.start(1, "block", {"key": "b"}, token="t")
        await blocked.started()
        await a.subscribe("iso://secret-of-a")  # the server logs "subscribed iso://secret-of-a"
        await a.call(a.next_id(), "release", {"key": "b"})
        assert (await blocked.result()).messages == [progress("t", 0, "b started"), tool_result(1, "released b")]
        await swarm.finish()


# -- 6. server-initiated requests ---------------------------------------------------------------
async def test_a_sampling_request_goes_to_the_one_capable_caller_on_its_post_stream_and_only_its_answer_counts() -> (
    None
):
    async with hostile_mesh() as swarm:
        a, o = await swarm.open("A", "O", capabilities=SAMPLING)
        seen: list[Message] = []

        async def answer(msg: Message) -> None:
            if msg.get("method") == "sampling/createMessage":
                seen.append(msg)
                await o.respond(msg["id"], sampling_answer("hijacked by O"))  # dropped: not O's request
                await a.respond(msg["id"], sampling_answer("from A"))

        exchange = await a.call(1, "sample", {"prompt": "for A"}, on_message=answer)
        assert len(seen) == 1
        request = seen[0]
        assert isinstance(request["id"], str) and request["id"].startswith("mcpmesh-s"), request
        assert request["params"]["messages"] == [{"role": "user", "content": {"type": "text", "text": "for A"}}]
        assert exchange.messages == [request, tool_result(1, "sampled: from A")]
        assert swarm.mux.dropped["unmatched_client_response"] == 1
        assert not swarm.mux.server_requests
        await swarm.finish()


async def test_an_elicitation_request_goes_to_the_one_capable_caller_and_its_answer_completes_the_call() -> None:
    async with hostile_mesh() as swarm:
        a, _bystander = await swarm.open("A", "O", capabilities=ELICITATION)  # O's GET stream is checked too

        async def answer(msg: Message) -> None:
            if msg.get("method") == "elicitation/create":
                assert msg["params"]["message"] == "for A"
                await a.respond(msg["id"], {"action": "accept", "content": {"answer": "A's"}})

        exchange = await a.call("e", "elicit", {"message": "for A"}, on_message=answer)
        assert [m.get("method") for m in exchange.messages] == ["elicitation/create", None]
        assert exchange.response == tool_result("e", 'elicited: accept {"answer": "A\'s"}')
        await swarm.finish()


@pytest.mark.parametrize(("tool", "method"), [("sample", "sampling/createMessage"), ("elicit", "elicitation/create")])
async def test_a_server_request_for_a_caller_without_the_capability_fails_and_reaches_nobody(
    tool: str, method: str
) -> None:
    async with hostile_mesh() as swarm:
        n = await swarm.open("N")  # declares nothing
        capable = await swarm.open("S", "E", capabilities={**SAMPLING, **ELICITATION})
        exchange = await n.call(1, tool, {"prompt": "x", "message": "x"})
        text = f"{tool} failed: -32601 mcpmesh: {method} cannot be routed to exactly one client that supports it"
        assert exchange.messages == [tool_result(1, text, is_error=True)]
        assert swarm.mux.dropped["unroutable_server_request"] == 1
        assert not swarm.mux.server_requests
        assert all(s.get_messages == [] for s in capable)
        await swarm.finish()


async def test_a_server_request_while_two_sessions_have_calls_in_flight_goes_to_nobody() -> None:
    async with hostile_mesh() as swarm:
        a, b = await swarm.open("A", "B", capabilities=SAMPLING)
        slow = b.start(1, "block", {"key": "b"}, token="t")
        await slow.started()
        exchange = await a.call(1, "sample", {"prompt": "whose?"})
        text = "sample failed: -32601 mcpmesh: sampling/createMessage cannot be routed to exactly one client"
        assert exchange.messages == [tool_result(1, f"{text} that supports it", is_error=True)]
        await a.call(a.next_id(), "release", {"key": "b"})
        assert (await slow.result()).messages == [progress("t", 0, "b started"), tool_result(1, "released b")]
        assert swarm.mux.dropped["unroutable_server_request"] == 1
        await swarm.finish()


async def test_a_server_request_for_a_session_with_two_calls_in_flight_arrives_on_its_own_get_stream() -> None:
    async with hostile_mesh() as swarm:
        a, b = await swarm.open("A", "B", capabilities=SAMPLING)
        a.allow_get_requests = True
        blocked = a.start(1, "block", {"key": "a"}, token="t")
        await blocked.started()
        sampling = a.start(2, "sample", {"prompt": "two calls"})
        (request,) = await a.wait_get(lambda m: m.get("method") == "sampling/createMessage")
        assert str(request["id"]).startswith("mcpmesh-s")
        await b.respond(request["id"], sampling_answer("hijacked by B"))
        await a.respond(request["id"], sampling_answer("from A's GET stream"))
        assert (await sampling.result()).messages == [tool_result(2, "sampled: from A's GET stream")]
        await b.call(b.next_id(), "release", {"key": "a"})
        assert (await blocked.result()).messages == [progress("t", 0, "a started"), tool_result(1, "released a")]
        assert swarm.mux.dropped["unmatched_client_response"] == 1
        await swarm.finish()


# -- 7. everything at once ------------------------------------------------------------------------
async def test_a_hostile_session_among_raw_and_sdk_clients_cannot_reach_their_traffic() -> None:
    """Three raw sessions and an SDK client share ids, tokens and a rendezvous; a fifth session
    cancels their ids, sends their progress token, answers a made-up server request, touches their
    resources and logs while they are in flight. Each victim sees exactly its own traffic."""
    async with hostile_mesh() as swarm:
        victims = await swarm.open("V0", "V1", "V2")
        attacker = await swarm.open("X")
        for i, victim in enumerate(victims):
            await victim.subscribe(f"iso://v{i}")
        group = {"group": "mix", "size": 5}
        pending = [v.start(1, "rendezvous", {**group, "text": v.label}, token="p") for v in victims]
        sdk_progress: list[tuple[float, str | None]] = []
        sdk_started = anyio.Event()
        sdk_done = anyio.Event()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            sdk_progress.append((value, message))
            sdk_started.set()

        async def sdk_client() -> None:
            async with mcp.Client(swarm.url) as client:
                reply = await client.call_tool("rendezvous", {**group, "text": "sdk"}, progress_callback=on_progress)
                assert reply.content[0].text == "sdk" and not reply.is_error  # type: ignore[union-attr]
            sdk_done.set()

        swarm.tg.start_soon(sdk_client)
        for call in pending:
            await call.started()
        with anyio.fail_after(WAIT):
            await sdk_started.wait()

        # Four requests are parked in the server; the attacker does its worst.
        for rid in (0, 1, 2, 3, "1", "p"):
            await attacker.notify("notifications/cancelled", {"requestId": rid})
        await attacker.notify("notifications/progress", {"progressToken": "p", "progress": 7})
        await attacker.post({"jsonrpc": "2.0", "id": "mcpmesh-s1", "result": sampling_answer("fake")})
        for i in range(len(victims)):
            await attacker.call(attacker.next_id(), "touch", {"uri": f"iso://v{i}"})
        dropped_logs = swarm.mux.dropped["unattributable_notification"]  # the subscribe logs so far
        logged = await attacker.call(attacker.next_id(), "log_levels", {"tag": "X"})
        assert [m.get("method") for m in logged.messages] == [None], "logs with 4 other calls in flight"
        assert swarm.mux.dropped["unattributable_notification"] == dropped_logs + len(LEVELS)
        joined = await attacker.call(1, "rendezvous", {**group, "text": "X"}, token="p")  # completes the group
        assert joined.messages == [progress("p", step, f"X step {step}") for step in (1, 2, 3)] + [tool_result(1, "X")]

        for victim, call in zip(victims, pending, strict=True):
            assert (await call.result()).messages == [
                progress("p", step, f"{victim.label} step {step}") for step in (1, 2, 3)
            ] + [tool_result(1, victim.label)]
        with anyio.fail_after(WAIT):
            await sdk_done.wait()
        assert sdk_progress == [(step, f"sdk step {step}") for step in (1, 2, 3)]
        state = await swarm.state()
        assert state["cancelled"] == [] and state["cancel_requests"] == [], state
        assert swarm.mux.dropped["unknown_cancel"] == 6
        assert swarm.mux.dropped["client_notification"] == 1
        assert swarm.mux.dropped["unmatched_client_response"] == 1
        await swarm.barrier()
        assert [v.updates() for v in victims] == [["iso://v0"], ["iso://v1"], ["iso://v2"]]
        assert attacker.updates() == []
        await swarm.finish()
