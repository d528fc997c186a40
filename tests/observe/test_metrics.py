"""/metrics: exact values from the mesh's own CollectorRegistry, driven by real servers and clients."""

from __future__ import annotations

import itertools
import os
import signal
from typing import Any

import anyio
import httpx
import prometheus_client
import pytest

from mcpmesh.app import Mesh
from mcpmesh.config import MeshConfig
from mcpmesh.observe.metrics import MAX_CLIENTS, MAX_TOOLS, OTHER, BoundedLabel
from mcpmesh.supervision.server import State
from mcpmesh.supervision.shared import SharedServer
from tests.conftest import RunningMesh, conformance_server, fixture_server, running_mesh

pytestmark = pytest.mark.anyio

VERSION = "2025-11-25"
FAST = {"health_interval": 30, "restart": {"backoff_initial": 0.05, "backoff_max": 0.1}}


def faulty(**settings: Any) -> dict[str, Any]:
    return {**fixture_server("faulty_server.py"), **FAST, **settings}


def sample(mesh: RunningMesh, name: str, **labels: str) -> float | None:
    return mesh.mesh.metrics.registry.get_sample_value(name, labels)


class Raw:
    """One Streamable HTTP session by hand: the client name is exactly what the test says."""

    def __init__(self, http: httpx.AsyncClient, url: str):
        self.http, self.url = http, url
        self.session_id = ""
        self._ids = itertools.count(1)

    @classmethod
    async def open(cls, http: httpx.AsyncClient, url: str, client: str) -> Raw:
        raw = cls(http, url)
        info = {"name": client, "version": "1"}
        reply = await raw.post({"method": "initialize", "params": {"protocolVersion": VERSION, "clientInfo": info}})
        assert reply.status_code == 200, reply.text
        raw.session_id = reply.headers["mcp-session-id"]
        return raw

    async def post(self, msg: dict[str, Any]) -> httpx.Response:
        headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": VERSION}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        return await self.http.post(self.url, json={"jsonrpc": "2.0", "id": next(self._ids), **msg}, headers=headers)

    async def call_tool(self, name: str, **arguments: Any) -> dict[str, Any]:
        reply = await self.post({"method": "tools/call", "params": {"name": name, "arguments": arguments}})
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    async def close(self) -> None:
        headers = {"Mcp-Session-Id": self.session_id, "MCP-Protocol-Version": VERSION}
        assert (await self.http.delete(self.url, headers=headers)).status_code in (200, 204)


async def until(condition: Any, seconds: float = 20) -> None:
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110  # a metric has no change event to wait on
            await anyio.sleep(0.02)


async def test_tool_calls_and_requests_are_counted_by_server_method_client_and_outcome() -> None:
    async with running_mesh({"fx": faulty()}) as mesh, httpx.AsyncClient(timeout=20) as http:
        raw = await Raw.open(http, mesh.url("fx"), "metrics test/1")  # sanitized to metrics_test_1
        for text in ("a", "b", "c"):
            assert (await raw.call_tool("echo", text=text))["result"]["content"][0]["text"] == text
        assert (await raw.call_tool("no_such_tool"))["error"]["code"] == -32602
        assert sample(mesh, "mcpmesh_tool_calls_total", server="fx", tool="echo", outcome="ok") == 3
        # A name the server does not list is no new series (the server's answer is still counted).
        assert sample(mesh, "mcpmesh_tool_calls_total", server="fx", tool="unknown_tool", outcome="error") == 1
        labels = {"server": "fx", "method": "tools/call", "client": "metrics_test_1"}
        assert sample(mesh, "mcpmesh_requests_total", **labels, outcome="ok") == 3
        assert sample(mesh, "mcpmesh_requests_total", **labels, outcome="error") == 1
        assert sample(mesh, "mcpmesh_request_duration_seconds_count", server="fx", method="tools/call") == 4
        slowest = sample(mesh, "mcpmesh_request_duration_seconds_bucket", server="fx", method="tools/call", le="300.0")
        assert slowest == 4
        assert sample(mesh, "mcpmesh_requests_in_flight", server="fx") == 0
        # The gateway answers initialize and ping itself in shared mode: those are not forwarded.
        assert sample(mesh, "mcpmesh_requests_total", **{**labels, "method": "initialize"}, outcome="ok") is None


async def test_a_call_in_flight_is_counted_until_it_times_out() -> None:
    async with running_mesh({"fx": faulty(request_timeout=1)}) as mesh, httpx.AsyncClient(timeout=20) as http:
        raw = await Raw.open(http, mesh.url("fx"), "waiter")
        async with anyio.create_task_group() as tg:
            replies: list[dict[str, Any]] = []

            async def hang() -> None:
                replies.append(await raw.call_tool("hang"))

            tg.start_soon(hang)
            await until(lambda: sample(mesh, "mcpmesh_requests_in_flight", server="fx") == 1)
        assert "did not answer" in replies[0]["error"]["message"]
        assert sample(mesh, "mcpmesh_requests_in_flight", server="fx") == 0
        assert sample(mesh, "mcpmesh_tool_calls_total", server="fx", tool="hang", outcome="timeout") == 1
        assert sample(mesh, "mcpmesh_request_duration_seconds_bucket", server="fx", method="tools/call", le="0.5") == 0
        assert sample(mesh, "mcpmesh_request_duration_seconds_bucket", server="fx", method="tools/call", le="2.5") == 1


async def test_state_restarts_and_dropped_lines_after_a_kill_and_a_restart() -> None:
    async with running_mesh({"fx": faulty()}) as mesh, httpx.AsyncClient(timeout=20) as http:
        server = mesh.mesh.supervisor.servers["fx"]
        assert isinstance(server, SharedServer) and server.child is not None and server.child.pid is not None
        assert sample(mesh, "mcpmesh_server_state", server="fx", state="healthy") == 1
        assert sample(mesh, "mcpmesh_server_restarts_total", server="fx", reason="exited") == 0
        raw = await Raw.open(http, mesh.url("fx"), "killer")
        await raw.call_tool("garbage")  # a line that is not JSON and one that is not JSON-RPC
        assert sample(mesh, "mcpmesh_stdout_dropped_lines_total", server="fx", reason="not_json") == 1

        seen: dict[str, float | None] = {}
        os.kill(server.child.pid, signal.SIGKILL)
        with anyio.fail_after(20):
            while server.state != State.RESTARTING:
                await server.changed.wait()
        seen["healthy"] = sample(mesh, "mcpmesh_server_state", server="fx", state="healthy")
        seen["restarting"] = sample(mesh, "mcpmesh_server_state", server="fx", state="restarting")
        assert seen == {"healthy": 0, "restarting": 1}
        with anyio.fail_after(20):
            while server.state != State.HEALTHY:
                await server.changed.wait()
        assert sample(mesh, "mcpmesh_server_state", server="fx", state="healthy") == 1
        assert sample(mesh, "mcpmesh_server_state", server="fx", state="restarting") == 0
        assert sample(mesh, "mcpmesh_server_restarts_total", server="fx", reason="exited") == 1
        assert sample(mesh, "mcpmesh_server_restarts_total", server="fx", reason="unhealthy") == 0

        # A call in flight when the process dies ends as `exited`; dropped lines of the dead
        # process are still counted after the next one took over.
        assert (await raw.call_tool("crash", how="exit"))["error"]["code"] < 0
        assert sample(mesh, "mcpmesh_tool_calls_total", server="fx", tool="crash", outcome="exited") == 1
        with anyio.fail_after(20):
            while server.state != State.HEALTHY:
                await server.changed.wait()
        assert (await raw.call_tool("garbage"))["result"]
        assert sample(mesh, "mcpmesh_stdout_dropped_lines_total", server="fx", reason="not_json") == 2
        assert sample(mesh, "mcpmesh_stdout_dropped_lines_total", server="fx", reason="not_jsonrpc") == 2
        assert sample(mesh, "mcpmesh_server_restarts_total", server="fx", reason="exited") == 2


async def test_bytes_to_and_from_a_server_are_counted() -> None:
    async with running_mesh({"fx": faulty()}) as mesh, httpx.AsyncClient(timeout=20) as http:
        raw = await Raw.open(http, mesh.url("fx"), "bytes")
        sent, received = (
            sample(mesh, f"mcpmesh_server_bytes_{d}_total", server="fx") or 0 for d in ("sent", "received")
        )
        await raw.call_tool("echo", text="x" * 100_000)
        grew_sent = (sample(mesh, "mcpmesh_server_bytes_sent_total", server="fx") or 0) - sent
        grew_received = (sample(mesh, "mcpmesh_server_bytes_received_total", server="fx") or 0) - received
        assert 100_000 < grew_sent < 100_500 and 100_000 < grew_received < 100_500


async def test_sessions_are_counted_by_client_and_era_and_expiry_is_told_apart() -> None:
    servers = {"fx": faulty()}
    async with running_mesh(servers, session_idle_timeout=2) as mesh, httpx.AsyncClient(timeout=20) as http:
        one = await Raw.open(http, mesh.url("fx"), "alpha")
        await Raw.open(http, mesh.url("fx"), "alpha")
        await Raw.open(http, mesh.url("fx"), "beta")
        assert sample(mesh, "mcpmesh_sessions", server="fx", client="alpha", era=VERSION) == 2
        assert sample(mesh, "mcpmesh_sessions", server="fx", client="beta", era=VERSION) == 1
        assert sample(mesh, "mcpmesh_sessions_opened_total", server="fx") == 3
        await one.close()
        assert sample(mesh, "mcpmesh_sessions", server="fx", client="alpha", era=VERSION) == 1
        await until(lambda: sample(mesh, "mcpmesh_sessions_closed_total", server="fx") == 3)
        assert sample(mesh, "mcpmesh_sessions_expired_total", server="fx") == 2  # the two left idle
        assert sample(mesh, "mcpmesh_sessions", server="fx", client="alpha", era=VERSION) is None


async def test_the_endpoint_serves_the_text_format() -> None:
    async with running_mesh({"fx": faulty()}) as mesh, httpx.AsyncClient(timeout=20) as http:
        reply = await http.get(f"{mesh.base_url}/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
        assert 'mcpmesh_server_state{server="fx",state="healthy"} 1.0' in reply.text
        assert "mcpmesh_port_pool_size 100.0" in reply.text and "mcpmesh_port_pool_used 0.0" in reply.text


async def test_the_body_stays_bounded_under_1000_sessions_with_many_client_names() -> None:
    async with running_mesh({"conf": conformance_server()}) as mesh, httpx.AsyncClient(timeout=30) as http:
        url = f"{mesh.base_url}/metrics"
        ids = [(await Raw.open(http, mesh.url("conf"), f"client-{i}")).session_id for i in range(10)]
        small = len((await http.get(url)).content)
        for i in range(10, 1000):
            ids.append((await Raw.open(http, mesh.url("conf"), f"client-{i % 200}")).session_id)
        assert len(mesh.mesh.store) == 1000
        body = (await http.get(url)).text
        series = [line for line in body.splitlines() if line.startswith("mcpmesh_sessions{")]
        assert len(series) == MAX_CLIENTS + 1  # 50 names, and "other" for the rest
        folded = sum(1 for i in range(10, 1000) if i % 200 >= MAX_CLIENTS)  # names after the first 50 seen
        assert sample(mesh, "mcpmesh_sessions", server="conf", client=OTHER, era=VERSION) == folded
        assert len(body) - small < 60 * 100  # ~40 more series of under 100 bytes, whatever the session count
        assert not any(session_id in body for session_id in ids)


def test_client_and_tool_labels_are_sanitized_and_bounded() -> None:
    label = BoundedLabel(3)
    assert [label("Claude Code"), label('x"}\n'), label("é"), label(None), label("")] == [
        "Claude_Code",
        "x___",
        "_",
        "unknown",
        "unknown",
    ]
    assert label("fourth") == OTHER and label("Claude Code") == "Claude_Code"  # known ones keep their label
    assert BoundedLabel(MAX_TOOLS)("a" * 500) == "a" * 64


def test_two_meshes_in_one_process_have_registries_of_their_own(tmp_path: Any) -> None:
    servers = {"fx": faulty()}
    first = Mesh(MeshConfig.model_validate({"mesh": {"state_dir": str(tmp_path / "a")}, "servers": servers}))
    second = Mesh(MeshConfig.model_validate({"mesh": {"state_dir": str(tmp_path / "b")}, "servers": servers}))
    try:
        assert first.metrics.registry is not second.metrics.registry
        for mesh in (first, second):
            assert mesh.metrics.registry.get_sample_value("mcpmesh_requests_in_flight", {"server": "fx"}) == 0
        assert prometheus_client.REGISTRY.get_sample_value("mcpmesh_requests_in_flight", {"server": "fx"}) is None
    finally:
        first.registry.close()
        second.registry.close()
