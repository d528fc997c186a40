"""`ChildProcess` on its own (no HTTP): the bounded stdout line reader, the environment allow-list,
the stop sequence, and that no descendant of a server outlives it.

Also home of the /proc helpers (`descendants`, `survivors`, `wait_gone`) the fault and shutdown
tests use; they are written independently of mcpmesh's own /proc walk, which is under test.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import anyio
import pytest

from mcpmesh.backend import process
from mcpmesh.backend.process import ChildProcess, child_environment
from tests.conftest import FIXTURES, PYTHON

pytestmark = pytest.mark.anyio

FAULTY = str(FIXTURES / "faulty_server.py")
MiB = 1024 * 1024


# -- /proc helpers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    """One process as /proc/<pid>/stat shows it; `start` tells a reused pid apart."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    comm: str
    start: int


def read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    head, _, tail = stat.rpartition(b")")  # the command name may itself hold spaces and ')'
    fields = tail.split()  # fields[0] is field 3 (state) of proc(5), so field n is fields[n - 3]
    return Proc(
        pid=pid,
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        state=fields[0].decode(),
        comm=head.split(b"(", 1)[1].decode(errors="replace"),
        start=int(fields[19]),
    )


def all_processes() -> dict[int, Proc]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (proc := read_proc(int(entry))) is not None:
            found[proc.pid] = proc
    return found


def descendants(root: int) -> dict[int, Proc]:
    """Every live process whose ancestry includes root (setsid does not change a parent)."""
    procs = all_processes()
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: dict[int, Proc] = {}
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in found and procs[pid].state not in ("Z", "X"):
                found[pid] = procs[pid]
                todo.append(pid)
    return found


def survivors(procs: Iterable[Proc]) -> list[Proc]:
    """Those of procs still running (a zombie has ended; a reused pid is another process)."""
    alive = []
    for proc in procs:
        now = read_proc(proc.pid)
        if now is not None and now.start == proc.start and now.state not in ("Z", "X"):
            alive.append(now)
    return alive


async def wait_gone(procs: Iterable[Proc], within: float = 3.0) -> list[Proc]:
    """Survivors once all have ended or `within` seconds passed (SIGKILL is delivered, not instant).

    A pidfd becomes readable when its process ends, so this waits on events, not on a timer.
    """
    procs = list(procs)
    with anyio.move_on_after(within):
        for proc in procs:
            with _pidfd(proc) as fd:
                if fd is not None:
                    await anyio.wait_readable(fd)
    return survivors(procs)


def wait_gone_sync(procs: Iterable[Proc], within: float = 3.0) -> list[Proc]:
    procs = list(procs)
    deadline = time.monotonic() + within
    for proc in procs:
        with _pidfd(proc) as fd:
            if fd is not None:
                select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    return survivors(procs)


def kill_survivors(procs: Iterable[Proc]) -> None:
    for proc in survivors(procs):
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


@contextmanager
def reaped(procs: dict[int, Proc]) -> Iterator[None]:
    """Whatever the outcome, none of procs outlives the block: a test must not leak what it finds leaking."""
    try:
        yield
    finally:
        kill_survivors(procs.values())


@contextmanager
def _pidfd(proc: Proc) -> Iterator[int | None]:
    """A pidfd for proc while it runs (None once it has ended), closed afterwards."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        yield None
        return
    try:
        yield fd if survivors([proc]) else None  # checked after opening: the pid is not a reused one
    finally:
        os.close(fd)


# -- ChildProcess helpers ----------------------------------------------------------------------
@asynccontextmanager
async def spawned(
    argv: Sequence[str], *, max_line_bytes: int = MiB, env: dict[str, str] | None = None
) -> AsyncIterator[ChildProcess]:
    env = child_environment({}) if env is None else env
    child = await ChildProcess.spawn("test", argv[0], argv[1:], env, None, max_line_bytes)
    try:
        yield child
    finally:
        with anyio.fail_after(15, shield=True):
            await child.stop()


async def read_all(child: ChildProcess) -> list[bytes]:
    with anyio.fail_after(15):
        return [line async for line in child.lines()]


def script(code: str) -> list[str]:
    return [PYTHON, "-c", code]


@asynccontextmanager
async def answering(argv: Sequence[str]) -> AsyncIterator[ChildProcess]:
    """A started faulty_server that has answered a ping: its flags (handlers, grandchildren) are in force."""
    async with spawned(argv) as child:
        lines = cast(AsyncGenerator[bytes, None], child.lines())  # an async generator: closed below
        try:
            child.write(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
            await child.drain()
            with anyio.fail_after(10):
                reply = await anext(lines)
            assert json.loads(reply) == {"jsonrpc": "2.0", "id": 1, "result": {}}
            yield child
        finally:
            await lines.aclose()


@pytest.fixture
def quick_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter graces: the steps of the stop sequence stay the same, the tests take less time."""
    monkeypatch.setattr(process, "STDIN_CLOSE_GRACE", 0.5)
    monkeypatch.setattr(process, "SIGTERM_GRACE", 0.5)


# -- the bounded line reader -------------------------------------------------------------------
async def test_oversize_lines_are_dropped_and_counted_and_the_next_line_still_comes() -> None:
    code = (
        "import sys; out = sys.stdout.buffer\n"
        "out.write(b'a' * 1024 + b'\\n')\n"  # exactly the limit: kept
        "out.write(b'b' * 1025 + b'\\n')\n"  # one byte over: dropped
        "out.write(b'c' * (3 * 1024 * 1024) + b'\\n')\n"  # spans many reads: dropped while streaming
        "out.write(b'after\\n')\n"
    )
    async with spawned(script(code), max_line_bytes=1024) as child:
        lines = await read_all(child)
        assert lines == [b"a" * 1024, b"after"]
        assert child.dropped == Counter({"oversize": 2})


async def test_a_line_split_across_reads_is_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import sys; out = sys.stdout.buffer\n"
        "out.write(b'{\"part\": 1,'); out.flush()\n"
        "sys.stdin.buffer.readline()\n"  # the rest only once the test saw the first read
        "out.write(b' \"part\": 2}\\nnext\\n'); out.flush()\n"
    )
    async with spawned(script(code)) as child:
        stdout = child.proc.stdout
        assert stdout is not None
        chunks: list[bytes] = []
        first_read = anyio.Event()
        real_read = stdout.read

        async def spy(n: int = -1) -> bytes:
            data = await real_read(n)
            chunks.append(data)
            first_read.set()
            return data

        monkeypatch.setattr(stdout, "read", spy)
        lines: list[bytes] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _collect(child, lines))
            with anyio.fail_after(10):
                await first_read.wait()
            child.write(b"go\n")
            await child.drain()
        assert chunks[0] == b'{"part": 1,'
        assert lines == [b'{"part": 1, "part": 2}', b"next"]
        assert not child.dropped


async def _collect(child: ChildProcess, into: list[bytes]) -> None:
    into.extend(await read_all(child))


async def test_a_large_line_within_the_limit_is_assembled_intact_from_many_reads() -> None:
    records = 5 * MiB // 16  # 5 MiB of numbered 16-byte records: at least 20 reads of 256 KiB
    code = (
        "import sys; out = sys.stdout.buffer\n"
        f"out.write(b''.join(b'%015d,' % i for i in range({records})) + b'\\n')\n"
        "out.write(b'x\\n')\n"
    )
    async with spawned(script(code), max_line_bytes=6 * MiB) as child:
        lines = await read_all(child)
        assert lines == [b"".join(b"%015d," % i for i in range(records)), b"x"]
        assert not child.dropped


# -- stdin -------------------------------------------------------------------------------------
async def test_lines_written_in_one_turn_reach_the_child_whole_and_in_order() -> None:
    """Lines after the first in a turn of the loop are held and joined; none is lost or reordered,
    small or past the hold cap, and lines written in a later turn follow them."""
    sizes = [10, 20, 70_000, 5, 200_000, 1, 30]  # two past HELD_WRITES_CAP: flushed early
    sent = [(b"%d:" % i) + b"x" * n for i, n in enumerate(sizes)]
    echo = "import sys\nfor line in sys.stdin.buffer: sys.stdout.buffer.write(line); sys.stdout.buffer.flush()"
    async with spawned(script(echo), max_line_bytes=MiB) as child:
        for line in sent:
            child.write(line + b"\n")  # all in one turn: no await in between
        await child.drain()
        await anyio.sleep(0.01)  # a later turn of the loop
        child.write(b"later\n")
        await child.drain()
        lines = child.lines()
        got = []
        with anyio.fail_after(10):
            while len(got) < len(sent) + 1:
                got.append(await anext(lines))
        assert got == [*sent, b"later"]


# -- environment ---------------------------------------------------------------------------------
async def test_child_gets_the_allow_list_and_configured_variables_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPMESH_TEST_NOT_LISTED", "must not leak")
    monkeypatch.setenv("MCPMESH_TEST_INHERITED", "asked for by name")
    monkeypatch.setenv("PATH", os.environ["PATH"])
    env = child_environment({"MCPMESH_TEST_CONFIGURED": "configured"}, ["MCPMESH_TEST_INHERITED"])
    code = "import json, os, sys; print(json.dumps(dict(os.environ)))"
    async with spawned(script(code), env=env) as child:
        [line] = await read_all(child)
    seen = json.loads(line)
    assert "MCPMESH_TEST_NOT_LISTED" not in seen
    assert seen["MCPMESH_TEST_CONFIGURED"] == "configured"
    assert seen["MCPMESH_TEST_INHERITED"] == "asked for by name"
    assert seen["PATH"] == os.environ["PATH"]
    unexpected = set(seen) - set(process.ENV_ALLOWLIST) - {"MCPMESH_TEST_CONFIGURED", "MCPMESH_TEST_INHERITED"}
    # The child's own runtime may add a few variables of its own (never one of ours).
    assert not {name for name in unexpected if name in os.environ}, unexpected


async def test_child_gets_the_proxy_and_ca_variables_package_launchers_need(monkeypatch: pytest.MonkeyPatch) -> None:
    network = {
        "SSL_CERT_FILE": "/etc/corp/ca.pem",
        "NODE_EXTRA_CA_CERTS": "/etc/corp/ca.pem",
        "REQUESTS_CA_BUNDLE": "/etc/corp/ca.pem",
        "SSL_CERT_DIR": "/etc/corp/certs",
        "HTTPS_PROXY": "http://proxy.corp:3128",
        "https_proxy": "http://proxy.corp:3128",
        "NO_PROXY": "localhost,127.0.0.1",
        "no_proxy": "localhost,127.0.0.1",
    }
    for name, value in network.items():
        monkeypatch.setenv(name, value)
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    async with spawned(script(code), env=child_environment({})) as child:
        [line] = await read_all(child)
    seen = json.loads(line)
    assert {name: seen.get(name) for name in network} == network


# -- the stop sequence ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param([PYTHON, FAULTY], 0, id="exits-on-stdin-eof"),
        pytest.param(["sleep", "1000"], -signal.SIGTERM, id="ignores-stdin-ends-on-sigterm"),
        pytest.param([PYTHON, FAULTY, "--stubborn"], -signal.SIGKILL, id="ignores-sigterm-too"),
    ],
)
async def test_stop_ends_each_kind_of_server_at_the_step_it_needs(
    quick_stop: None, argv: list[str], expected: int
) -> None:
    ready = answering(argv) if argv[0] == PYTHON else spawned(argv)
    async with ready as child:
        before = read_proc(child.pid)
        assert before is not None
        with anyio.fail_after(10):
            code = await child.stop()
        assert code == expected
        assert child.returncode == expected
        assert survivors([before]) == []


@pytest.mark.parametrize("stubborn", [False, True], ids=["polite", "stubborn"])
@pytest.mark.parametrize("wrapped", [False, True], ids=["direct", "sh-wrapper"])
async def test_stop_leaves_no_descendant_even_one_that_left_the_group(
    quick_stop: None, wrapped: bool, stubborn: bool
) -> None:
    flags = ["--spawn-grandchild", "--setsid-grandchild", *(["--stubborn"] if stubborn else [])]
    argv = [PYTHON, FAULTY, *flags]
    if wrapped:  # like npx/uvx: the server is a child of the process mcpmesh started
        argv = ["sh", "-c", f"{shlex.join(argv)}; exit $?"]
    async with answering(argv) as child:
        tree = descendants(child.pid)
        with reaped(tree):
            sleepers = [p for p in tree.values() if p.comm == "sleep"]
            assert len(sleepers) == 2, tree
            left = [p for p in sleepers if p.pgid != child.pid]
            assert len(left) == 1 and left[0].sid == left[0].pid, "one sleeper must have left group and session"
            with anyio.fail_after(10):
                await child.stop()
            assert await wait_gone(tree.values()) == []


async def test_stop_after_the_server_crashed_still_ends_its_setsid_grandchild(quick_stop: None) -> None:
    async with answering([PYTHON, FAULTY, "--setsid-grandchild"]) as child:
        tree = descendants(child.pid)
        assert [p.comm for p in tree.values()] == ["sleep"]
        with reaped(tree):
            os.kill(child.pid, signal.SIGKILL)  # the server crashes; its supervisor then stops it
            with anyio.fail_after(10):
                assert await child.wait() == -signal.SIGKILL
                await child.stop()
            assert await wait_gone(tree.values()) == []


@pytest.mark.parametrize(
    "anyio_backend",
    [
        "asyncio",
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ],
)
async def test_wait_returns_when_the_server_dies_even_if_a_grandchild_holds_its_stdout() -> None:
    async with answering([PYTHON, FAULTY, "--spawn-grandchild"]) as child:
        tree = descendants(child.pid)
        with reaped(tree):
            os.kill(child.pid, signal.SIGKILL)
            with anyio.fail_after(3):
                assert await child.wait() == -signal.SIGKILL
    with reaped(tree):
        assert await wait_gone(tree.values()) == []  # stop() ended the grandchild through the group
