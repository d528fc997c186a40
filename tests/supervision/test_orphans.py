"""Nothing outlives the mesh, even kill -9: its children die with it (the kernel's parent-death
signal), and a mesh started on the same state_dir reaps what they left (grandchildren), never
touching another state_dir's processes or those of a mesh still running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mcpmesh.backend.process import ChildProcess, child_environment
from mcpmesh.supervision.orphans import JOURNAL_DIR, OWNER_VARIABLE, Owner, state_id, sweep
from tests.backend.test_process import (
    FAULTY,
    Proc,
    descendants,
    kill_survivors,
    read_proc,
    survivors,
    wait_gone_sync,
)
from tests.cli.test_shutdown import EXIT_BOUND, Mesh, free_port, toml_value, wait_healthy
from tests.conftest import PYTHON, time_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")

# A process that sleeps; with `stubborn` it ignores SIGTERM. It says `ready` once its handler is set.
SLEEPER = "import signal, sys, time\n{ignore}print('ready', flush=True)\ntime.sleep(1000)\n"


LOOPS = [("asyncio", {}), ("asyncio", {"use_uvloop": True})]


def sleeper(marker: str | None, *, stubborn: bool = False) -> subprocess.Popen[bytes]:
    code = SLEEPER.format(ignore="signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if stubborn else "")
    env = {"PATH": os.environ.get("PATH", ""), **({OWNER_VARIABLE: marker} if marker is not None else {})}
    proc = subprocess.Popen([PYTHON, "-c", code], env=env, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def dead_pid() -> int:
    """The pid of a process that has ended (a mesh killed earlier)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def as_proc(pid: int) -> Proc:
    proc = read_proc(pid)
    assert proc is not None, f"{pid} is not running"
    return proc


@pytest.mark.anyio
async def test_the_sweep_reaps_only_what_a_gone_mesh_of_this_state_dir_left(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    state, other = tmp_path / "state", tmp_path / "other"
    gone = dead_pid()
    left = Owner(state_id(state), gone, 1).marker  # the marker of a mesh on this state_dir, killed
    marked, stubborn = sleeper(left), sleeper(left, stubborn=True)
    unmarked = sleeper(None)  # its environment cleared: known only from the gone mesh's journal
    journal = state / JOURNAL_DIR / f"{gone}-1-0000"
    journal.parent.mkdir(parents=True)
    journal.write_text(f"+ {unmarked.pid} {as_proc(unmarked.pid).start}\n", encoding="ascii")
    foreign = sleeper(Owner(state_id(other), gone, 1).marker)  # another mesh's, on another state_dir
    alive_owner = sleeper(Owner.of(state).marker)  # a mesh still running on this state_dir: this process
    sleepers += [marked, stubborn, unmarked, foreign, alive_owner]

    reaped = await sweep(state)

    assert sorted(leftover.pid for leftover in reaped) == sorted([marked.pid, stubborn.pid, unmarked.pid])
    assert marked.wait(EXIT_BOUND) == -signal.SIGTERM
    assert stubborn.wait(EXIT_BOUND) == -signal.SIGKILL  # it ignored SIGTERM
    assert unmarked.wait(EXIT_BOUND) == -signal.SIGTERM
    assert foreign.poll() is None and alive_owner.poll() is None
    assert not journal.exists()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", LOOPS, ids=["asyncio", "uvloop"])  # `mcpmesh up` runs on uvloop
async def test_a_server_process_is_set_to_be_killed_by_the_kernel_when_the_mesh_dies() -> None:
    code = "import ctypes; v = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(v)); print(v.value)"  # 2: GET
    child = await ChildProcess.spawn("t", PYTHON, ["-c", code], child_environment({}), None, 1024)
    try:
        assert [line async for line in child.lines()] == [str(int(signal.SIGKILL)).encode()]
    finally:
        await child.stop()


def write_config(path: Path, port: int, state: Path) -> None:
    servers = {
        "forking": {"command": PYTHON, "args": [FAULTY, "--spawn-grandchild"]},
        "daemonizing": {"command": PYTHON, "args": [FAULTY, "--setsid-grandchild"]},
        "stubborn": {"command": PYTHON, "args": [FAULTY, "--stubborn"]},  # ignores stdin EOF and SIGTERM
        "time": time_server(),
    }
    lines = ["[mesh]", 'host = "127.0.0.1"', f"port = {port}", f"state_dir = {toml_value(str(state))}"]
    for name, table in servers.items():
        lines += ["", f"[servers.{name}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items() if not isinstance(value, dict)]
        lines += [f"{key} = {{ {', '.join(f'{k} = {toml_value(v)}' for k, v in value.items())} }}"
                  for key, value in table.items() if isinstance(value, dict)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def start_mesh(tmp_path: Path, run: str) -> Mesh:
    port = free_port()
    config = tmp_path / f"{run}.toml"
    write_config(config, port, tmp_path / "state")
    stderr = tmp_path / f"{run}-stderr.txt"
    with open(tmp_path / f"{run}-stdout.txt", "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen([PYTHON, "-m", "mcpmesh", "up", "--config", str(config)], stdout=out, stderr=err)
    return Mesh(proc, port, stderr)


def carrying(marker: str) -> list[int]:
    """Processes whose environment holds this owner marker."""
    wanted = f"{OWNER_VARIABLE}={marker}".encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        proc = read_proc(int(entry))
        if wanted in environ.split(b"\0") and proc is not None and proc.state not in ("Z", "X"):
            found.append(int(entry))
    return found


def test_after_kill_9_children_die_with_the_mesh_and_the_next_start_reaps_the_grandchildren(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    meshes: list[Mesh] = []
    seen: dict[int, Proc] = {}
    try:
        first = start_mesh(tmp_path, "first")
        meshes.append(first)
        wait_healthy(first)
        seen |= descendants(first.proc.pid)
        direct = [p for p in seen.values() if p.ppid == first.proc.pid]
        grandchildren = [p for p in seen.values() if p.ppid != first.proc.pid]
        assert len(direct) == 4 and sorted(p.comm for p in grandchildren) == ["sleep", "sleep"], seen
        marker = Owner(state_id(tmp_path / "state"), first.proc.pid, as_proc(first.proc.pid).start).marker
        assert sorted(carrying(marker)) == sorted(seen)  # every process it started carries its marker
        (journal,) = (tmp_path / "state" / JOURNAL_DIR).iterdir()  # and it journalled their process groups
        assert journal.name.startswith(f"{first.proc.pid}-")
        assert {int(line.split()[1]) for line in journal.read_text().splitlines()} == {p.pid for p in direct}
        foreign = sleeper(Owner(state_id(tmp_path / "elsewhere"), dead_pid(), 1).marker)
        sleepers.append(foreign)

        first.proc.kill()
        first.proc.wait(EXIT_BOUND)
        assert wait_gone_sync(direct) == [], f"outlived the mesh: {survivors(direct)}"
        assert [p.pid for p in survivors(grandchildren)] == [p.pid for p in grandchildren]  # left for the sweep

        second = start_mesh(tmp_path, "second")
        meshes.append(second)
        wait_healthy(second)
        seen |= descendants(second.proc.pid)
        assert wait_gone_sync(grandchildren) == [], f"not reaped: {survivors(grandchildren)}"
        assert carrying(marker) == []
        assert foreign.poll() is None, "a process of another state_dir was touched"
        log = second.log()
        for proc in grandchildren:
            assert f"reaped pid={proc.pid} server=" in log, log
        with httpx.Client(base_url=second.base_url, timeout=10) as http:
            events = http.get("/v1/events", params={"limit": 1000}).json()["events"]
        reaped = {e["detail"]["pid"] for e in events if e["kind"] == "orphan_reaped"}
        assert reaped == {p.pid for p in grandchildren}

        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(EXIT_BOUND) == 0, second.log()
        assert list((tmp_path / "state" / JOURNAL_DIR).iterdir()) == []  # it stopped its own: nothing to sweep
    finally:  # a failed test must not leave a mesh or its servers behind
        for mesh in meshes:
            if mesh.proc.poll() is None:
                seen |= descendants(mesh.proc.pid)
                mesh.proc.kill()
                mesh.proc.wait(EXIT_BOUND)
        kill_survivors(seen.values())
