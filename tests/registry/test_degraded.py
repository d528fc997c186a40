"""A registry that cannot be written degrades the mesh, never stops it: another process holding the
SQLite lock past the busy timeout, and a full disk (a real tmpfs state_dir). Calls keep working,
/readyz says why it is not ready, /healthz stays up, the metrics say so, and once the lock or the
space is back the registry catches up with what happened meanwhile."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import httpx
import mcp
import pytest

from mcpmesh.registry.ports import PortPool, PortRange
from mcpmesh.registry.resilient import ResilientRegistry
from mcpmesh.registry.sqlite import SqliteRegistry
from mcpmesh.supervision.server import State
from tests.cli.test_shutdown import EXIT_BOUND, free_port
from tests.conftest import PYTHON, RunningMesh, running_mesh, time_server

pytestmark = pytest.mark.anyio

# Another process holding the write lock, as a second program on the same state_dir would.
HOLD_LOCK = (
    "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "db.execute('BEGIN EXCLUSIVE'); print('held', flush=True); sys.stdin.read()"
)
FAST = {"restart": {"backoff_initial": 0.05, "backoff_max": 0.1}}
DEADLINE = 30.0  # seconds for the mesh to notice a fault or its end (retries back off to 5 s)


@contextlib.contextmanager
def lock_held(db: Path) -> Iterator[None]:
    holder = subprocess.Popen([PYTHON, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == b"held\n"
        yield
    finally:
        holder.stdin.close()  # its read ends, it exits, the lock goes with it
        holder.wait(10)
        holder.stdout.close()


async def wait_for(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        with anyio.fail_after(DEADLINE):
            while not await check():  # noqa: ASYNC110  # asked over HTTP, as a client would: no event to await
                await anyio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


async def readyz(mesh: RunningMesh) -> httpx.Response:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=30) as http:
        return await http.get("/readyz")


async def get(mesh: RunningMesh, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=30) as http:
        return await http.get(path)


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


async def act_while_degraded(mesh: RunningMesh, problem: str) -> int:
    """Restart a server, open a session and call tools; check the mesh serves and says it is
    degraded; the number of tool calls made."""
    server = mesh.mesh.supervisor.servers["time"]
    async with httpx.AsyncClient(base_url=mesh.base_url, timeout=30) as http:
        assert (await http.post("/v1/servers/time/restart")).status_code == 202
    with anyio.fail_after(DEADLINE):
        while server.state != State.HEALTHY:
            await server.changed.wait()
    calls = 0
    async with mcp.Client(mesh.url("time"), mode="legacy") as client:
        for _ in range(5):
            result = await client.call_tool("get_current_time", {"timezone": "UTC"})
            assert not result.is_error and "UTC" in result.content[0].text  # type: ignore[union-attr]
            calls += 1
    mesh.mesh.audit.flush()  # the calls' audit events now, not at its next tick: they too must wait in memory
    reply = await readyz(mesh)
    assert reply.status_code == 503, reply.text
    reason = reply.json()["registry"]
    assert reason.startswith(f"registry: {problem} ({mesh.mesh.registry.store.path}), ") and " writes pending" in reason
    assert reply.json()["servers"] == {"time": "healthy"}  # the servers are fine: only the registry lags
    health = await get(mesh, "/healthz")
    assert health.status_code == 200 and health.json()["registry"] == "degraded"
    described = (await get(mesh, "/v1/servers")).json()["registry"]
    assert described["state"] == "degraded" and described["reason"].startswith(f"registry: {problem}")
    metrics = (await get(mesh, "/metrics")).text
    assert metric(metrics, "mcpmesh_registry_degraded") == 1.0
    assert metric(metrics, "mcpmesh_registry_pending_writes") > 0
    assert metric(metrics, "mcpmesh_registry_write_failures_total") >= 1
    stored = {e.kind for e in mesh.mesh.registry.store.events(0, 10_000, "time")}
    assert not stored & {"restart_requested", "tool_call"}  # they really wait in memory, not on disk
    return calls


async def check_caught_up(mesh: RunningMesh, calls: int) -> None:
    async def ready() -> bool:
        return (await readyz(mesh)).status_code == 200

    await wait_for(ready, "/readyz 200 once the registry is writable")
    assert (await readyz(mesh)).json()["registry"] is None
    metrics = (await get(mesh, "/metrics")).text
    assert metric(metrics, "mcpmesh_registry_degraded") == 0.0
    assert metric(metrics, "mcpmesh_registry_pending_writes") == 0.0
    assert metric(metrics, "mcpmesh_registry_dropped_writes_total") == 0.0
    events = mesh.mesh.registry.store.events(0, 10_000, "time")  # straight from the file
    kinds = [e.kind for e in events]
    requested = kinds.index("restart_requested")
    after = events[requested + 1 :]
    assert any(e.kind == "state_changed" and e.detail["state"] == "healthy" for e in after), kinds
    assert "session_opened" in kinds[requested:]
    assert sum(1 for e in after if e.kind == "tool_call" and e.detail["tool"] == "get_current_time") == calls


async def test_a_lock_held_past_the_busy_timeout_degrades_the_mesh_and_it_catches_up() -> None:
    async with running_mesh({"time": {**time_server(), **FAST}}) as mesh:
        assert (await readyz(mesh)).status_code == 200
        with lock_held(mesh.mesh.registry.store.path):
            calls = await act_while_degraded(mesh, "database is locked")
            status = await anyio.to_thread.run_sync(
                lambda: subprocess.run(
                    [sys.executable, "-m", "mcpmesh", "status", "--url", mesh.base_url],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            )
            assert status.returncode == 1, status.stdout + status.stderr
            assert "registry: database is locked" in status.stdout
        await check_caught_up(mesh, calls)


@contextlib.contextmanager
def small_tmpfs() -> Iterator[Path]:
    """A 2 MiB tmpfs, for a disk that really fills (needs CAP_SYS_ADMIN, as root in a container)."""
    where = Path(tempfile.mkdtemp(prefix="mcpmesh-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def fill(where: Path) -> Path:
    """Write a file until the filesystem says ENOSPC; the file, to remove to free the space."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28  # ENOSPC
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_degrades_the_mesh_and_freeing_space_lets_it_catch_up() -> None:
    with small_tmpfs() as state_dir:
        async with running_mesh({"time": {**time_server(), **FAST}}, state_dir=str(state_dir)) as mesh:
            assert (await readyz(mesh)).status_code == 200
            filler = fill(state_dir)
            calls = await act_while_degraded(mesh, "database or disk is full")
            filler.unlink()
            await check_caught_up(mesh, calls)


def until(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait (bounded) for `check`, failing at once if mcpmesh exited meanwhile."""
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert proc.poll() is None, f"mcpmesh exited early:\n{log.read_text()}"
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}\n{log.read_text()}")
        time.sleep(0.05)


def test_sigterm_stops_mcpmesh_up_while_a_lock_holds_its_registry(tmp_path: Path) -> None:
    port, server = free_port(), time_server()
    config = tmp_path / "mcpmesh.toml"
    config.write_text(
        f'[mesh]\nport = {port}\nstate_dir = "{tmp_path / "state"}"\n\n[servers.time]\n'
        f'command = "{server["command"]}"\nargs = {json.dumps(server["args"])}\nenv = {{ TZ = "UTC" }}\n',
        encoding="utf-8",
    )
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen([PYTHON, "-m", "mcpmesh", "up", "--config", str(config)], stdout=err, stderr=err)
    base = f"http://127.0.0.1:{port}"

    def ready(status: int) -> Callable[[], bool]:
        def check() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{base}/readyz", timeout=10).status_code == status
            return False

        return check

    try:
        until(ready(200), "ready", proc, log)
        with lock_held(tmp_path / "state" / "registry.sqlite3"):
            assert httpx.post(f"{base}/v1/servers/time/restart", timeout=30).status_code == 202
            until(ready(503), "/readyz 503 while the registry is locked", proc, log)
            assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=EXIT_BOUND) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    said = log.read_text()
    assert "Traceback" not in said, said
    assert "registry: database is locked" in said and "writes unwritten" in said, said


# -- the queue itself, over a real SQLite file and a lock another process holds ----------------
SPAN = PortRange(23140, 23149)  # this file's own range (test_registry.py uses 23100-23119)


def caught_up(registry: ResilientRegistry) -> None:
    deadline = time.monotonic() + DEADLINE
    while registry.health().degraded:
        if time.monotonic() > deadline:
            pytest.fail(f"never caught up: {registry.health()}")
        time.sleep(0.05)


def test_ports_handed_out_while_the_registry_is_locked_are_distinct_and_written_later(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    registry = ResilientRegistry(SqliteRegistry(db))
    pool = PortPool(registry, SPAN, "127.0.0.1")
    first = pool.allocate("a")
    with lock_held(db):
        assert pool.release("a") == first  # now resting: nobody else may have it for the grace period
        others = [pool.allocate(name) for name in ("b", "c", "d")]
        assert registry.health().degraded and registry.health().pending == 4
        assert [(x.holder, x.state) for x in registry.store.leases()] == [("a", "held")]  # nothing written yet
        again = pool.allocate("a")  # its own port back, from what waits in memory
        seen = {(x.port, x.holder, x.state) for x in registry.leases()}
    assert again == first and len({first, *others}) == 4
    caught_up(registry)
    assert {(x.port, x.holder, x.state) for x in registry.store.leases()} == seen
    assert {x.holder for x in registry.store.leases() if x.state == "held"} == {"a", "b", "c", "d"}
    registry.close()


def test_a_full_queue_drops_the_oldest_tool_calls_first_and_keeps_ports_and_server_states(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    registry = ResilientRegistry(SqliteRegistry(db), limit=50)
    with lock_held(db):
        registry.hold(23140, "a")
        registry.append("state_changed", "a", state="failed", reason="x")
        registry.append_many([("tool_call", "a", time.time(), {"n": n}) for n in range(100)])  # one audit batch
        for n in range(100, 200):
            registry.append("tool_call", "a", n=n)
        registry.append("state_changed", "a", state="healthy", reason="ok")
        health = registry.health()
        assert health.pending <= 50 and health.pending + health.dropped == 203
    caught_up(registry)
    events = registry.store.events(0, 1000)
    assert [e.detail["state"] for e in events if e.kind == "state_changed"] == ["failed", "healthy"]
    calls = [e.detail["n"] for e in events if e.kind == "tool_call"]
    assert calls == list(range(200 - len(calls), 200)) and len(calls) == 203 - health.dropped - 3
    assert [(x.port, x.holder, x.state) for x in registry.store.leases()] == [(23140, "a", "held")]
    registry.close()


def test_server_events_are_dropped_only_when_the_queue_holds_nothing_else(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    registry = ResilientRegistry(SqliteRegistry(db), limit=10)
    with lock_held(db):
        registry.hold(23141, "a")
        for n in range(30):
            registry.append("state_changed", "a", state="restarting", reason=str(n))
        assert registry.health().pending <= 10 and registry.health().dropped == 31 - registry.health().pending
    caught_up(registry)
    reasons = [int(e.detail["reason"]) for e in registry.store.events(0, 1000)]
    assert reasons == list(range(30 - len(reasons), 30))  # the newest kept
    assert [(x.port, x.holder) for x in registry.store.leases()] == [(23141, "a")]  # a port is never dropped
    registry.close()


async def test_the_dashboard_shows_the_registry_degraded_and_then_not() -> None:
    from tests.dashboard.test_dashboard import Page, _chromium, _require_chromium, in_thread

    _require_chromium()
    driver = _chromium()
    try:
        page = Page(driver)
        async with running_mesh({"time": {**time_server(), **FAST}}) as mesh:
            await in_thread(lambda: page.open(mesh.base_url))
            await in_thread(lambda: page.until("the header", lambda: "1 healthy" in page.text("#summary")))
            with lock_held(mesh.mesh.registry.store.path):
                async with httpx.AsyncClient(base_url=mesh.base_url, timeout=30) as http:
                    assert (await http.post("/v1/servers/time/restart")).status_code == 202
                said = f"registry: database is locked ({mesh.mesh.registry.store.path}), "
                await in_thread(lambda: page.until("the registry's trouble", lambda: said in page.text("#summary")))
            await in_thread(lambda: page.until("the trouble's end", lambda: "registry" not in page.text("#summary")))
    finally:
        driver.quit()
