"""Catalog tracking: every list a server offers is read, fingerprinted and kept in the registry; a
change is noticed even when the server does not announce it, and announced to its clients."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import mcp
import mcp_types as types
import pytest

from mcpmesh.backend.upstream import Upstream
from mcpmesh.router.catalog import Catalog
from mcpmesh.supervision.shared import SharedServer
from tests.conftest import RunningMesh, everything_server, fixture_server, running_mesh

pytestmark = pytest.mark.anyio

PROBING = {"health_interval": 0.2, "health_timeout": 2, "catalog_interval": 0.2}


async def detail(mesh: RunningMesh, server: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=mesh.base_url) as http:
        return (await http.get(f"/v1/servers/{server}")).json()  # type: ignore[no-any-return]


async def catalog_events(mesh: RunningMesh, server: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=mesh.base_url) as http:
        events = (await http.get("/v1/events", params={"server": server, "limit": 1000})).json()["events"]
    return [e["detail"] for e in events if e["kind"] == "catalog_changed"]


async def test_every_list_a_real_server_offers_is_in_the_registry() -> None:
    async with running_mesh({"everything": everything_server()}) as mesh:
        server = mesh.mesh.supervisor.servers["everything"]
        assert isinstance(server, SharedServer)
        with anyio.fail_after(20):
            while len(mesh.mesh.registry.listings("everything")) < 3:  # noqa: ASYNC110  # read in the background
                await anyio.sleep(0.05)
        async with mcp.Client(mesh.url("everything"), mode="legacy") as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            prompts = [p.name for p in (await client.list_prompts()).prompts]
            uris, cursor = [], None
            while True:  # every page, as the gateway reads them
                page = await client.list_resources(cursor=cursor)
                uris += [str(r.uri) for r in page.resources]
                if not (cursor := page.next_cursor):
                    break
        catalog = (await detail(mesh, "everything"))["catalog"]
        assert catalog["tools"]["names"] == tools and catalog["tools"]["count"] == len(tools) > 5
        assert catalog["prompts"]["names"] == prompts
        assert catalog["resources"]["names"] == uris
        first = {e["list"]: e for e in await catalog_events(mesh, "everything")}
        assert first["tools"]["added"] == sorted(tools)[:20] and first["tools"]["removed"] == []


async def test_an_unannounced_tool_change_is_seen_recorded_and_announced() -> None:
    async with running_mesh({"plugins": {**fixture_server("faulty_server.py"), **PROBING}}) as mesh:
        heard: list[str] = []
        changed = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                heard.append(message.method)
                changed.set()

        async with mcp.Client(mesh.url("plugins"), mode="legacy", message_handler=on_message) as client:
            before = (await detail(mesh, "plugins"))["catalog"]["tools"]
            assert "late_plugin" not in before["names"]
            await client.call_tool("add_tool", {"name": "late_plugin"})  # the server says nothing about it
            with anyio.fail_after(10):
                await changed.wait()  # the gateway noticed at a probe, and told this client
            after = (await detail(mesh, "plugins"))["catalog"]["tools"]
            assert after["names"] == [*before["names"], "late_plugin"] and after["hash"] != before["hash"]
            assert "late_plugin" in {t.name for t in (await client.list_tools()).tools}
        assert heard == ["notifications/tools/list_changed"]
        events = await catalog_events(mesh, "plugins")
        assert [(e["list"], e["added"], e["removed"]) for e in events[1:]] == [("tools", ["late_plugin"], [])]


async def test_the_catalog_survives_a_mesh_restart_without_a_false_change(tmp_path: Any) -> None:
    servers = {"plugins": fixture_server("faulty_server.py")}
    async with running_mesh(servers, state_dir=str(tmp_path)) as mesh:
        with anyio.fail_after(10):
            while "tools" not in mesh.mesh.registry.listings("plugins"):  # noqa: ASYNC110  # read in the background
                await anyio.sleep(0.05)
        first = mesh.mesh.registry.listings("plugins")["tools"]
    async with running_mesh(servers, state_dir=str(tmp_path)) as mesh:
        server = mesh.mesh.supervisor.servers["plugins"]
        assert isinstance(server, SharedServer)
        with anyio.fail_after(10):
            while "tools" not in server.mux.catalog:  # noqa: ASYNC110  # read in the background
                await anyio.sleep(0.05)
        assert mesh.mesh.registry.listings("plugins")["tools"] == first  # same content, first-seen time kept
        assert len(await catalog_events(mesh, "plugins")) == 1  # only the first run's


async def test_probes_do_not_re_read_the_lists_before_the_catalog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chatty server logs each list it is asked for: probes every 0.1 s must not ask each time."""
    reads: list[str] = []
    probes_answered: list[str] = []
    refresh, call = Catalog.refresh, Upstream.call

    async def counting_refresh(self: Catalog, upstream: Upstream, **kwargs: Any) -> None:
        reads.append("read")
        await refresh(self, upstream, **kwargs)

    async def counting_call(self: Upstream, method: str, *args: Any, **kwargs: Any) -> Any:
        answer = await call(self, method, *args, **kwargs)
        if method == "ping":
            probes_answered.append(method)
        return answer

    monkeypatch.setattr(Catalog, "refresh", counting_refresh)
    monkeypatch.setattr(Upstream, "call", counting_call)
    quick_probes = {"health_interval": 0.1, "health_timeout": 2, "catalog_interval": 3600}
    async with running_mesh({"plugins": {**fixture_server("faulty_server.py"), **quick_probes}}):
        with anyio.fail_after(20):
            while len(probes_answered) < 10:  # noqa: ASYNC110  # probes are time-driven
                await anyio.sleep(0.05)
    assert reads == ["read"]  # at the handshake only
