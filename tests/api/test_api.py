"""The /v1 API and dedicated ports, against a real mesh."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx
import mcp
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client

from tests.conftest import conformance_server, running_mesh, time_server

pytestmark = pytest.mark.anyio

PORTS = "23200-23209"  # below Linux's ephemeral range


def settings(tmp_path: Path, **more: Any) -> dict[str, Any]:
    return {"state_dir": str(tmp_path / "state"), "ports": PORTS, **more}


async def get(mesh_url: str, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=mesh_url, timeout=10) as http:
        return await http.get(path, params=params)


async def test_servers_are_listed_with_what_was_observed(tmp_path: Path) -> None:
    servers = {"fixture": {**conformance_server(), "dedicated_port": True}, "time": time_server()}
    async with running_mesh(servers, **settings(tmp_path)) as mesh:
        me = types.Implementation(name="api-test", version="9.9")
        async with mcp.Client(mesh.url("fixture"), mode="legacy", client_info=me) as client:
            await client.list_tools()
            listing = (await get(mesh.base_url, "/v1/servers")).json()["servers"]
            by_name = {s["name"]: s for s in listing}
            fixture = by_name["fixture"]
            assert fixture["state"] == "healthy" and fixture["sharing"] == "shared" and fixture["era"] == "legacy"
            assert fixture["pid"] == mesh.mesh.supervisor.servers["fixture"].child.pid  # type: ignore[attr-defined]
            assert fixture["sessions"] == 1 and fixture["clients"] == ["api-test/9.9"]
            assert fixture["tools"] >= 10
            assert fixture["urls"]["mcp"] == f"{mesh.base_url}/servers/fixture/mcp"
            assert fixture["urls"]["dedicated_mcp"] == "http://127.0.0.1:23200/mcp"
            assert by_name["time"]["era"] == "modern" and "dedicated_mcp" not in by_name["time"]["urls"]
        detail = (await get(mesh.base_url, "/v1/servers/fixture")).json()
        assert isinstance(detail["stderr_tail"], list)
        missing = await get(mesh.base_url, "/v1/servers/nope")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def test_a_dedicated_port_serves_the_same_server_at_mcp_and_sse(tmp_path: Path) -> None:
    servers = {"fixture": {**conformance_server(), "dedicated_port": True}}
    async with running_mesh(servers, **settings(tmp_path)):
        async with mcp.Client("http://127.0.0.1:23200/mcp", mode="legacy") as client:
            reply = await client.call_tool("test_simple_text", {})
            assert reply.content[0].text == "This is a simple text response for testing."  # type: ignore[union-attr]
        async with mcp.Client("http://127.0.0.1:23200/mcp") as modern:
            assert "test_simple_text" in {t.name for t in (await modern.list_tools()).tools}
        async with sse_client("http://127.0.0.1:23200/sse") as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                assert (await session.list_tools()).tools
        async with httpx.AsyncClient(timeout=10) as http:
            foreign = await http.post("http://127.0.0.1:23200/mcp", json={}, headers={"Origin": "http://evil.example"})
            assert foreign.status_code == 403


async def test_the_same_server_gets_the_same_port_after_a_restart(tmp_path: Path) -> None:
    servers = {
        "a": {**conformance_server(), "dedicated_port": True},
        "b": {**conformance_server(), "dedicated_port": True},
    }
    async with running_mesh(servers, **settings(tmp_path)) as mesh:
        first = {p["holder"]: p["port"] for p in (await get(mesh.base_url, "/v1/ports")).json()["ports"]}
    reordered = {"b": servers["b"], "a": servers["a"]}
    async with running_mesh(reordered, **settings(tmp_path)) as mesh:
        second = {p["holder"]: p["port"] for p in (await get(mesh.base_url, "/v1/ports")).json()["ports"]}
        pool = (await get(mesh.base_url, "/v1/ports")).json()
    assert first == second == {"a": 23200, "b": 23201}
    assert (pool["range"], pool["size"], pool["used"]) == (PORTS, 10, 2)


async def test_a_foreign_listener_is_skipped_and_reported(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 23200))
        squatter.listen()
        async with running_mesh({"a": {**conformance_server(), "dedicated_port": True}}, **settings(tmp_path)) as mesh:
            ports = (await get(mesh.base_url, "/v1/ports")).json()["ports"]
    assert {"port": 23201, "holder": "a", "state": "held"}.items() <= next(
        p for p in ports if p["holder"] == "a"
    ).items()
    foreign = next(p for p in ports if p["state"] == "foreign")
    assert foreign["port"] == 23200 and foreign["holder"].startswith("pid ")


async def test_a_full_range_fails_that_server_with_the_reason_and_the_rest_keep_serving(tmp_path: Path) -> None:
    servers = {
        "a": {**conformance_server(), "dedicated_port": True},
        "b": {**conformance_server(), "dedicated_port": True},
    }
    async with running_mesh(servers, **settings(tmp_path, ports="23200-23200")) as mesh:
        states = {s["name"]: s for s in (await get(mesh.base_url, "/v1/servers")).json()["servers"]}
        failed = [s for s in states.values() if s["state"] == "failed"]
        assert len(failed) == 1
        assert "range 23200-23200 (1 ports)" in failed[0]["reason"] and "23200: " in failed[0]["reason"]
        serving = next(s for s in states.values() if s["state"] == "healthy")
        async with mcp.Client(mesh.url(serving["name"]), mode="legacy") as client:
            assert (await client.list_tools()).tools
        events = (await get(mesh.base_url, "/v1/events")).json()["events"]
        assert {e["kind"] for e in events} >= {"port_allocated", "port_exhausted"}


async def test_events_page_and_record_sessions(tmp_path: Path) -> None:
    async with running_mesh({"fixture": conformance_server()}, **settings(tmp_path)) as mesh:
        for _ in range(3):
            async with mcp.Client(mesh.url("fixture"), mode="legacy") as client:
                await client.list_tools()
        collected: list[dict[str, Any]] = []
        after = 0
        while page := (await get(mesh.base_url, "/v1/events", limit=2, after=after, server="fixture")).json()["events"]:
            assert len(page) <= 2
            collected += page
            after = page[-1]["id"]
        ids = [e["id"] for e in collected]
        assert ids == sorted(set(ids))  # every event once, in order
        assert [e["kind"] for e in collected][:2] == ["spawned", "state_changed"]
        sessions = [e for e in collected if e["kind"].startswith("session_")]
        assert [e["kind"] for e in sessions] == ["session_opened", "session_closed"] * 3
        assert sessions[-1]["detail"]["reason"] == "deleted by the client"
        for bad in ({"after": "x"}, {"limit": 0}, {"after": -1}):
            reply = await get(mesh.base_url, "/v1/events", **bad)
            assert reply.status_code == 400 and reply.json()["error"] == "bad_request", bad


async def test_consul_shaped_catalog_and_health(tmp_path: Path) -> None:
    async with running_mesh({"fixture": conformance_server()}, **settings(tmp_path)) as mesh:
        assert (await get(mesh.base_url, "/v1/catalog/services")).json() == {"fixture": ["mcp", "sharing:shared"]}
        [entry] = (await get(mesh.base_url, "/v1/health/service/fixture")).json()
        assert entry["Service"]["Service"] == "fixture"
        assert (entry["Service"]["Address"], entry["Service"]["Port"]) == ("127.0.0.1", mesh.port)
        assert entry["Checks"][0]["Status"] == "passing"
        assert (await get(mesh.base_url, "/v1/health/service/nope")).json() == []


async def test_openapi_document_and_wrong_methods(tmp_path: Path) -> None:
    async with running_mesh({"fixture": conformance_server()}, **settings(tmp_path)) as mesh:
        doc = (await get(mesh.base_url, "/v1/openapi.json")).json()
        assert doc["openapi"].startswith("3.") and "/v1/servers/{name}" in doc["paths"]
        async with httpx.AsyncClient(base_url=mesh.base_url) as http:
            assert (await http.post("/v1/servers", json={})).status_code == 405


async def test_status_and_ports_commands_print_what_the_mesh_reports(tmp_path: Path) -> None:
    import json
    import sys

    import anyio

    state = tmp_path / "state"
    config = tmp_path / "mcpmesh.toml"
    config.write_text(f'[mesh]\nstate_dir = "{state}"\nports = "{PORTS}"\n[servers.fixture]\ncommand = "x"\n')
    servers = {
        "fixture": {**conformance_server(), "dedicated_port": True},
        "broken": {"command": "/nonexistent/x", "restart": {"max_restarts": 0}},
    }
    async with running_mesh(servers, **settings(tmp_path)) as mesh:
        run = await anyio.run_process(
            [sys.executable, "-m", "mcpmesh", "status", "--url", mesh.base_url, "--json"], check=False
        )
        piped = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # as `mcpmesh status | less` runs
        table = await anyio.run_process(
            [sys.executable, "-m", "mcpmesh", "status", "--url", mesh.base_url], check=False, env=piped
        )
    assert run.returncode == 1  # not everything is healthy
    assert {s["name"]: s["state"] for s in json.loads(run.stdout)} == {"fixture": "healthy", "broken": "failed"}
    assert b"command not found" in table.stdout and b"fixture" in table.stdout
    reason = (
        b"command not found or not executable: /nonexistent/x; not retried: install it, then `mcpmesh restart broken`"
    )
    assert reason in table.stdout, table.stdout.decode()  # one line: piped, nothing is folded
    ports = await anyio.run_process([sys.executable, "-m", "mcpmesh", "ports", "--config", str(config), "--json"])
    assert json.loads(ports.stdout)["ports"][0] | {"since": 0} == {
        "port": 23200,
        "holder": "fixture",
        "state": "held",
        "since": 0,
    }
    down = await anyio.run_process(
        [sys.executable, "-m", "mcpmesh", "status", "--url", "http://127.0.0.1:9"], check=False
    )
    assert down.returncode == 2 and b"cannot reach the mesh" in down.stdout
