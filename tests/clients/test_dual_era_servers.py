"""Dual-era servers as people write them today, on FastMCP 4.x and on the official SDK 2.x
(`MCPServer`), whose tools ask the client for input mid-call with `ctx.elicit()` and sampling.

Such a tool fails on a 2026-07-28 connection to its own server (the server has no channel for a
request mid-call there), so mcpmesh speaks the handshake era to a server that offers both: through
the mesh the SDK client, in the handshake era and in 2026-07-28, gets every such call answered with
its own callbacks' answers. `prefer_era = "2026-07-28"` is shown to do what the README says."""

from __future__ import annotations

from typing import Any

import anyio
import mcp
import mcp_types as types
import pytest

from tests.conftest import fixture_server, running_mesh

pytestmark = pytest.mark.anyio

SERVERS = {"fastmcp": "dual_era_fastmcp.py", "sdk": "dual_era_sdk.py"}
# (sharing, client mode): a 2026-07-28 client of a session-mode server gets a process per request,
# and its input-required retry goes back to the process whose call it resumes.
RUNS = [("shared", "legacy"), ("shared", "2026-07-28"), ("session", "legacy"), ("session", "2026-07-28")]


async def answer_elicitation(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    assert params.message == "What is your name?"
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def answer_sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    content = params.messages[0].content
    assert isinstance(content, types.TextContent)
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=content.text.upper()), model="m"
    )


def text_of(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent), block
    return block.text


def client(url: str, mode: str) -> mcp.Client:
    return mcp.Client(
        url,
        mode=mode,  # type: ignore[arg-type]
        elicitation_callback=answer_elicitation,
        sampling_callback=answer_sampling,
    )


@pytest.mark.parametrize(("sharing", "mode"), RUNS)
@pytest.mark.parametrize("server", list(SERVERS))
async def test_tools_that_elicit_and_sample_get_the_clients_answers(server: str, sharing: str, mode: str) -> None:
    async with running_mesh({"d": {**fixture_server(SERVERS[server]), "sharing": sharing}}) as mesh:
        supervised = mesh.mesh.supervisor.servers["d"]
        if sharing == "shared":
            assert supervised.reason == "initialized (legacy era)"
        with anyio.fail_after(60):
            async with client(mesh.url("d"), mode) as c:
                asked = await c.call_tool("ask_name", {})
                assert not asked.is_error, asked
                assert text_of(asked) == "accept: Ada"
                sampled = await c.call_tool("summarize", {"text": "long text"})
                assert not sampled.is_error, sampled
                assert text_of(sampled) == "summary: LONG TEXT"


async def test_prefer_era_2026_speaks_2026_to_a_dual_era_server_whose_elicit_then_has_no_channel() -> None:
    table = {**fixture_server(SERVERS["fastmcp"]), "prefer_era": "2026-07-28"}
    async with running_mesh({"d": table}) as mesh:
        assert mesh.mesh.supervisor.servers["d"].reason == "initialized (modern era)"
        with anyio.fail_after(60):
            async with client(mesh.url("d"), "legacy") as c:
                asked = await c.call_tool("ask_name", {})
    assert asked.is_error
    assert "unavailable on 2026-07-28 connections" in text_of(asked)


@pytest.mark.parametrize("sharing", ["shared", "session"])
async def test_a_server_that_refuses_the_handshake_is_spoken_to_in_2026(sharing: str) -> None:
    """A 2026-07-28-only server refuses `initialize` (UnsupportedProtocolVersion): a shared one is
    then asked server/discover; in session mode the refusal of the client's own handshake is
    answered by the gateway. Clients of both eras are served."""
    table = {**fixture_server(SERVERS["sdk"], "--2026-only"), "sharing": sharing}
    async with running_mesh({"d": table}) as mesh:
        if sharing == "shared":
            assert mesh.mesh.supervisor.servers["d"].reason == "initialized (modern era)"
        with anyio.fail_after(60):
            for mode in ("legacy", "2026-07-28"):
                async with mcp.Client(mesh.url("d"), mode=mode) as c:  # type: ignore[arg-type]
                    assert "echo" in {tool.name for tool in (await c.list_tools()).tools}
                    assert text_of(await c.call_tool("echo", {"text": mode})) == f"echo: {mode}"


# -- 2026-07-28 servers asking handshake-era clients through input-required results -------------

TWO_THOUSAND_26 = {
    "2026-only": {**fixture_server(SERVERS["sdk"], "--2026-only")},
    "dual-era, prefer_era 2026": {**fixture_server(SERVERS["sdk"]), "prefer_era": "2026-07-28"},
}


@pytest.mark.parametrize("sharing", ["shared", "session"])
@pytest.mark.parametrize("kind", list(TWO_THOUSAND_26))
async def test_input_required_results_are_asked_of_a_handshake_era_caller(kind: str, sharing: str) -> None:
    """The SDK's resolver tools answer a 2026-07-28 call with input_required: the gateway asks the
    caller (elicitation, then sampling, on the call's own stream) and sends the call again."""
    async with running_mesh({"d": {**TWO_THOUSAND_26[kind], "sharing": sharing}}) as mesh:
        with anyio.fail_after(60):
            async with client(mesh.url("d"), "legacy") as c:
                greeted = await c.call_tool("greet", {})
                assert not greeted.is_error, greeted
                assert text_of(greeted) == "hello, Ada"
                condensed = await c.call_tool("condense", {"text": "long text"})
                assert text_of(condensed) == "condensed: LONG TEXT"
        server = mesh.mesh.supervisor.servers["d"]
        if sharing == "shared":
            assert server.reason == "initialized (modern era)"
            assert not server.mux.input_relay.asked and not server.mux.input_relay.rounds  # type: ignore[attr-defined]


async def test_each_caller_is_asked_only_its_own_calls_input() -> None:
    """Two handshake-era sessions with the same request ids on one shared 2026-07-28 process, each
    answering with another name: every greeting carries its own caller's answer."""
    answers: dict[str, list[str]] = {"alpha": [], "beta": []}

    def answering(name: str) -> Any:
        async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            answers[name].append(params.message)
            await anyio.sleep(0.05)  # both calls wait for their callers at once
            return types.ElicitResult(action="accept", content={"name": name})

        return answer

    async def greet_as(url: str, name: str, out: dict[str, list[str]]) -> None:
        async with mcp.Client(url, mode="legacy", elicitation_callback=answering(name)) as c:
            out[name] = [text_of(await c.call_tool("greet", {})) for _ in range(3)]

    greetings: dict[str, list[str]] = {}
    async with running_mesh({"d": TWO_THOUSAND_26["2026-only"]}) as mesh:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for name in answers:
                    tg.start_soon(greet_as, mesh.url("d"), name, greetings)
    assert greetings == {"alpha": ["hello, alpha"] * 3, "beta": ["hello, beta"] * 3}
    assert answers == {"alpha": ["What is your name?"] * 3, "beta": ["What is your name?"] * 3}


async def test_a_caller_that_refuses_an_input_request_gets_the_refusal_and_nothing_waits() -> None:
    async def refuse(context: Any, params: types.ElicitRequestParams) -> types.ErrorData:
        return types.ErrorData(code=-32600, message="not now")

    async with running_mesh({"d": TWO_THOUSAND_26["2026-only"]}) as mesh:
        with anyio.fail_after(60):
            async with mcp.Client(mesh.url("d"), mode="legacy", elicitation_callback=refuse) as c:
                with pytest.raises(mcp.MCPError) as caught:
                    await c.call_tool("greet", {})
                assert "the client refused the server's input request: not now" in caught.value.message
                assert text_of(await c.call_tool("echo", {"text": "still here"})) == "echo: still here"
        relay = mesh.mesh.supervisor.servers["d"].mux.input_relay  # type: ignore[attr-defined]
        assert not relay.asked and not relay.rounds
