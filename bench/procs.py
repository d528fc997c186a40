"""Processes the bench starts: each in its own session (process group), found again by a marker
variable in its environment, measured by RSS over its whole tree, and stopped group by group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "MCPMESH_BENCH_RUN"  # every process the bench starts carries MARKER=<run id>
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _stat(pid: int) -> list[str] | None:
    raw = _read(f"/proc/{pid}/stat").decode(errors="replace")
    if not raw:
        return None
    # comm may contain spaces or parentheses: split after the last ')'
    return raw[raw.rfind(")") + 2 :].split()


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid in all_pids():
        st = _stat(pid)
        if st is not None:
            kids.setdefault(int(st[1]), []).append(pid)
    return kids


def tree(root: int) -> list[int]:
    """root and all its live descendants (by parent pid)."""
    kids = children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat(pid) is None:
            continue
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        st = _stat(pid)
        if st is not None and st[0] != "Z":
            total += int(st[21]) * PAGE  # field 24 (rss, pages); st starts at field 3
    return total


def cpu_seconds(pids: Iterable[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            total += int(st[11]) + int(st[12])  # utime + stime
    return total / ticks


def marked(run_id: str) -> list[int]:
    """Live processes whose environment carries this run's marker (zombies excluded)."""
    needle = f"{MARKER}={run_id}".encode()
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        st = _stat(pid)
        if st is None or st[0] == "Z":
            continue
        if needle in _read(f"/proc/{pid}/environ").split(b"\0"):
            found.append(pid)
    return found


class CpuWatch:
    """CPU used on the whole machine versus by the bench and everything it started (reaped), over a
    stretch: the rest is other people's load, reported so that a noisy run can be recognised."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.ours0 = time.perf_counter(), _machine_busy(), _ours()

    def result(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        busy, ours = _machine_busy() - self.busy0, _ours() - self.ours0
        return {"wall_s": wall, "machine_cores": busy / wall, "foreign_cores": max(0.0, busy - ours) / wall}


def _machine_busy() -> float:
    fields = _read("/proc/stat").split(b"\n", 1)[0].split()[1:]
    vals = [int(x) for x in fields]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _ours() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Proc:
    """One started program (its own session and process group) and what it left in a log."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.perf_counter)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 20) -> str:
        lines = _read(str(self.log_path)).decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self, grace: float = 5.0) -> list[int]:
        """SIGTERM the group, then SIGKILL the group and every descendant still there.
        Returns the pids that needed SIGKILL (for the report)."""
        members = tree(self.pid)
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.alive() or _any_alive(members)):
            time.sleep(0.05)
        killed = [p for p in members if _alive(p)]
        _signal_group(self.pid, signal.SIGKILL)
        for pid in killed:
            _kill(pid, signal.SIGKILL)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return killed


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def _any_alive(pids: Iterable[int]) -> bool:
    return any(_alive(p) for p in pids)


def start(
    name: str,
    argv: Sequence[str],
    run_id: str,
    log_dir: Path,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {}), MARKER: run_id}
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    return Proc(name, popen, log_path)


def sweep(run_id: str) -> list[int]:
    """Kill whatever still carries this run's marker; returns what was found."""
    left = marked(run_id)
    for pid in left:
        _kill(pid, signal.SIGKILL)
    return left
