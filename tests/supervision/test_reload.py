"""Hot reload on a live mesh: POST /v1/reload (and `mcpmesh reload`) applies a changed config
file's difference and leaves everything else running; a broken file changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp
import pytest

from mcpmesh.config import load_config
from tests.conftest import PYTHON, RunningMesh, conformance_server, everything_server, running_mesh, time_server
from tests.front.test_streamable_http import INIT, headers

pytestmark = pytest.mark.anyio

PORTS = "23680-23689"  # this file's own range: other test files allocate from theirs


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a TOML basic string
    return str(value)


def write_config(path: Path, servers: dict[str, dict[str, Any]], **mesh: Any) -> None:
    """A config file; [mesh] port 0 unless given, as the harness's mesh has."""
    mesh = {"port": 0, **mesh}
    lines = ["[mesh]", *(f"{key} = {toml_value(value)}" for key, value in mesh.items())]
    for name, table in servers.items():
        lines += ["", f"[servers.{name}]", *(f"{key} = {toml_value(value)}" for key, value in table.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class Tally:
    """Calls answered so far, and a wait until there are `n`."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = anyio.Event()

    def add(self) -> None:
        self.count += 1
        self._changed.set()
        self._changed = anyio.Event()

    async def reach(self, n: int) -> None:
        with anyio.fail_after(30):
            while self.count < n:
                await self._changed.wait()


async def get(mesh: RunningMesh, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=30) as http:
        return await http.get(path, params=params)


async def reload(mesh: RunningMesh) -> httpx.Response:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=60) as http:
        return await http.post("/v1/reload")


async def pids(mesh: RunningMesh) -> dict[str, int | None]:
    return {s["name"]: s["pid"] for s in (await get(mesh, "/v1/servers")).json()["servers"]}


async def events(mesh: RunningMesh, kind: str) -> list[dict[str, Any]]:
    found = (await get(mesh, "/v1/events", limit=1000)).json()["events"]
    return [e["detail"] for e in found if e["kind"] == kind]


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def paris_time() -> dict[str, Any]:
    return {**time_server("handshake"), "args": ["--local-timezone", "Europe/Paris"]}


async def test_a_reload_under_load_adds_changes_and_removes_while_an_unchanged_session_keeps_calling(
    tmp_path: Path,
) -> None:
    path, state = tmp_path / "mcpmesh.toml", str(tmp_path / "state")
    before = {"steady": time_server("handshake"), "changing": time_server("handshake"), "leaving": conformance_server()}
    write_config(path, before, state_dir=state)
    async with running_mesh(before, state_dir=state, reload_from=lambda: load_config(path)) as mesh:
        old = await pids(mesh)
        async with mcp.Client(mesh.url("steady"), mode="legacy") as client:
            calls, done = Tally(), False

            async def keep_calling() -> None:  # any error here fails the test through the task group
                while not done:
                    answer = await client.call_tool("get_current_time", {"timezone": "UTC"})
                    assert not answer.is_error, answer
                    calls.add()

            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_calling)
                await calls.reach(3)
                sessions = {s.id for s in mesh.mesh.store.sessions_of("steady")}
                after = {"steady": before["steady"], "changing": paris_time(), "added": everything_server()}
                write_config(path, after, state_dir=state)
                reply = await reload(mesh)
                await calls.reach(calls.count + 3)  # the same session, still answered
                done = True  # not a cancel: the SDK client minds a call cancelled mid-flight
            assert {s.id for s in mesh.mesh.store.sessions_of("steady")} == sessions  # no re-initialize

        assert reply.status_code == 200, reply.text
        assert reply.json() == {
            "reloaded": True,
            "added": ["added"],
            "removed": ["leaving"],
            "changed": ["changing"],
            "unchanged": ["steady"],
            "needs_restart": [],
            "failed": {},
            "refused": None,
        }
        with anyio.fail_after(60):
            await mesh.mesh.supervisor.wait_settled()
        new = await pids(mesh)
        assert set(new) == {"steady", "changing", "added"}
        assert new["steady"] == old["steady"]
        assert new["changing"] is not None and new["changing"] != old["changing"]
        assert old["leaving"] is not None and not alive(old["leaving"])
        async with httpx.AsyncClient(timeout=30) as http:
            gone = await http.post(mesh.url("leaving"), json=INIT, headers=headers(version=None))
        assert gone.status_code == 404
        assert (await get(mesh, "/v1/servers/leaving")).status_code == 404

        async with mcp.Client(mesh.url("changing"), mode="legacy") as client:
            tools = await client.list_tools()
        assert "Europe/Paris" in json.dumps([t.model_dump() for t in tools.tools])  # its new argument
        async with mcp.Client(mesh.url("added"), mode="legacy") as client:
            echoed = await client.call_tool("echo", {"message": "hello"})
        assert "hello" in echoed.content[0].text  # type: ignore[union-attr]

        [event] = await events(mesh, "config_reloaded")
        assert (event["added"], event["removed"], event["changed"]) == (["added"], ["leaving"], ["changing"])


async def test_a_broken_file_is_refused_with_its_error_and_every_server_keeps_running(tmp_path: Path) -> None:
    path, state = tmp_path / "mcpmesh.toml", str(tmp_path / "state")
    servers = {"steady": time_server("handshake"), "other": conformance_server()}
    write_config(path, servers, state_dir=state)
    good = path.read_text()
    async with running_mesh(servers, state_dir=state, reload_from=lambda: load_config(path)) as mesh:
        old = await pids(mesh)

        path.write_text(good + "\n[servers.half\ncommand = 'x'\n")  # a syntax error
        refused = await reload(mesh)
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["reloaded"] is False and body["added"] == [] and body["removed"] == []
        assert body["message"].startswith(f"{path}: invalid TOML") and "line" in body["message"]

        path.write_text(good.replace('prefer_era = "handshake"', 'prefer_era = "1999"'))  # a bad value
        cli = await anyio.to_thread.run_sync(lambda: mcpmesh("reload", "--url", mesh.base_url))
        assert cli.returncode == 1, cli.stdout + cli.stderr
        line = good.splitlines().index('prefer_era = "handshake"') + 1
        assert cli.stdout.startswith(
            f"reload refused, the running config is kept: {path}:{line}: servers.steady.prefer_era"
        )

        assert await pids(mesh) == old
        refusals = await events(mesh, "config_reload_refused")
        assert [e["error"].split(":")[0] for e in refusals] == [str(path), str(path)]
        assert await events(mesh, "config_reloaded") == []


async def test_ports_follow_a_reload_and_mesh_settings_that_cannot_change_live_are_reported(tmp_path: Path) -> None:
    path, state = tmp_path / "mcpmesh.toml", str(tmp_path / "state")
    before = {"own": {**conformance_server(), "dedicated_port": True}, "plain": conformance_server()}
    write_config(path, before, state_dir=state, ports=PORTS)
    async with running_mesh(before, state_dir=state, ports=PORTS, reload_from=lambda: load_config(path)) as mesh:
        own_port = mesh.mesh.pool.serving["own"]
        after = {"plain": {**conformance_server(), "dedicated_port": True}, "new": conformance_server()}
        write_config(path, after, state_dir=state, ports=PORTS, dedicated_ports=True, max_sessions=10)
        reply = (await reload(mesh)).json()
        assert (reply["added"], reply["removed"], reply["changed"]) == (["new"], ["own"], ["plain"])
        assert reply["needs_restart"] == ["max_sessions"] and reply["failed"] == {}

        leases = {lease.holder: lease for lease in mesh.mesh.registry.leases()}
        assert leases["own"].state == "released" and leases["own"].port == own_port  # resting for the grace period
        with pytest.raises(OSError):  # its listener is closed
            await anyio.connect_tcp("127.0.0.1", own_port)
        for name in ("plain", "new"):  # `dedicated_ports = true` applies live to the new one too
            url = (await get(mesh, f"/v1/servers/{name}")).json()["urls"]["dedicated_mcp"]
            assert not url.endswith(f":{own_port}/mcp")
            async with httpx.AsyncClient(timeout=30) as http:
                answer = await http.post(url, json=INIT, headers=headers(version=None))
            assert answer.status_code == 200, answer.text
        [event] = await events(mesh, "config_reloaded")
        assert event["needs_restart"] == ["max_sessions"]


async def test_two_reloads_at_once_run_one_after_the_other(tmp_path: Path) -> None:
    path, state = tmp_path / "mcpmesh.toml", str(tmp_path / "state")
    write_config(path, {"first": conformance_server()}, state_dir=state)
    async with running_mesh(
        {"first": conformance_server()}, state_dir=state, reload_from=lambda: load_config(path)
    ) as mesh:
        changed = {**conformance_server(), "env": {"CHANGED": "1"}}  # stopping its old process takes a while
        write_config(path, {"first": changed, "second": conformance_server()}, state_dir=state)
        reloader = mesh.mesh.reloader
        assert reloader is not None
        results = []

        async def one() -> None:
            results.append(await reloader.reload("test"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
        assert [(r.changed, r.added, r.unchanged, r.failed) for r in results] == [
            (["first"], ["second"], [], {}),
            ([], [], ["first", "second"], {}),  # the second saw what the first had done
        ]
        assert list(mesh.mesh.supervisor.servers) == ["first", "second"]
        with anyio.fail_after(30):
            await mesh.mesh.supervisor.wait_settled()
        assert len([e for e in await events(mesh, "spawned") if e["command"] == PYTHON]) == 3  # 1 + 1 changed + 1 added


async def test_a_reload_while_servers_are_starting_leaves_one_process_with_the_new_settings(tmp_path: Path) -> None:
    path, state = tmp_path / "mcpmesh.toml", str(tmp_path / "state")
    write_config(path, {"clock": time_server("handshake")}, state_dir=state)
    async with running_mesh(
        {"clock": time_server("handshake")}, state_dir=state, settle=False, reload_from=lambda: load_config(path)
    ) as mesh:
        write_config(path, {"clock": paris_time()}, state_dir=state)
        reply = await reload(mesh)
        assert reply.json()["changed"] == ["clock"]
        with anyio.fail_after(60):
            await mesh.mesh.supervisor.wait_settled()
        assert mesh.mesh.supervisor.servers["clock"].config.args == ["--local-timezone", "Europe/Paris"]
        spawned = [e["pid"] for e in await events(mesh, "spawned")]
        assert (await pids(mesh))["clock"] == spawned[-1]
        assert [pid for pid in spawned if alive(pid)] == [spawned[-1]]


async def test_no_reload_starts_anything_once_the_mesh_is_stopping(tmp_path: Path) -> None:
    path, state = tmp_path / "mcpmesh.toml", str(tmp_path / "state")
    write_config(path, {"first": conformance_server()}, state_dir=state)
    async with running_mesh(
        {"first": conformance_server()}, state_dir=state, reload_from=lambda: load_config(path)
    ) as mesh:
        write_config(path, {"first": conformance_server(), "late": conformance_server()}, state_dir=state)
        reloader = mesh.mesh.reloader
        assert reloader is not None
        reloader.close()  # what a stop signal does first
        result = await reloader.reload("test")
        assert result.refused == "the mesh is stopping"
        assert list(mesh.mesh.supervisor.servers) == ["first"]
        assert [e["error"] for e in await events(mesh, "config_reload_refused")] == ["the mesh is stopping"]


async def test_a_mesh_not_started_from_a_file_says_it_cannot_reload() -> None:
    async with running_mesh({"first": conformance_server()}) as mesh:
        reply = await reload(mesh)
        assert reply.status_code == 409 and "not started from a config file" in reply.json()["message"]
        async with httpx.AsyncClient(base_url=mesh.base_url) as http:
            foreign = await http.post("/v1/reload", headers={"Origin": "http://localhost:9999"})
        assert foreign.status_code == 403  # a page on another origin may not change the mesh


def mcpmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcpmesh", *args], capture_output=True, text=True, timeout=60)


async def test_mcpmesh_reload_prints_what_the_mesh_did(tmp_path: Path) -> None:
    path, state = tmp_path / "mcpmesh.toml", str(tmp_path / "state")
    write_config(path, {"first": conformance_server()}, state_dir=state)
    async with running_mesh(
        {"first": conformance_server()}, state_dir=state, reload_from=lambda: load_config(path)
    ) as mesh:
        write_config(path, {"first": conformance_server(), "second": conformance_server()}, state_dir=state, port=1)
        done = await anyio.to_thread.run_sync(lambda: mcpmesh("reload", "--url", mesh.base_url))
        assert done.returncode == 0, done.stderr
        assert (
            done.stdout.split("\n")[0] == "reloaded: added second; 1 unchanged; needs a restart to apply: [mesh] port"
        )
        again = await anyio.to_thread.run_sync(lambda: mcpmesh("reload", "--url", mesh.base_url, "--json"))
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout) | {"unchanged": None} == {
            "reloaded": True,
            "added": [],
            "removed": [],
            "changed": [],
            "unchanged": None,
            "needs_restart": ["port"],
            "failed": {},
            "refused": None,
        }
        assert sorted(json.loads(again.stdout)["unchanged"]) == ["first", "second"]


async def test_the_secrets_of_a_server_added_by_a_reload_are_masked_like_the_first_ones(tmp_path: Path) -> None:
    path, state = tmp_path / "mcpmesh.toml", str(tmp_path / "state")
    write_config(path, {"first": conformance_server()}, state_dir=state)
    async with running_mesh(
        {"first": conformance_server()}, state_dir=state, reload_from=lambda: load_config(path)
    ) as mesh:
        secret = "reloaded-s3cr3t-4242"
        keyed = {**conformance_server(), "env": {"TOKEN": secret}, "secret_env": ["TOKEN"]}
        keyed["args"] = [*keyed["args"], "--token", secret]
        write_config(path, {"first": conformance_server(), "keyed": keyed}, state_dir=state)
        assert (await reload(mesh)).json()["added"] == ["keyed"]
        [spawned] = [e for e in await events(mesh, "spawned") if "--token" in e["argv"]]
        assert spawned["argv"][-2:] == ["--token", "***"]
        assert secret not in (await get(mesh, "/v1/events", limit=1000)).text
