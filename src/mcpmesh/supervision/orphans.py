"""Nothing outlives the mesh: every server process carries its mesh's owner marker and is journalled
in state_dir, and a mesh starting on that state_dir reaps what an earlier one, killed with -9, left
behind (Linux: found in /proc; elsewhere the sweep finds nothing)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import anyio

from mcpmesh.backend.process import MARKER_VARIABLE

OWNER_VARIABLE = "MCPMESH_OWNER"
"""Set in every server's environment and inherited by its descendants: `<state>:<pid>:<start>`, the
mesh's state_dir (hashed) and the mesh process (its pid, and its start time, which tells a reused
pid apart)."""
JOURNAL_DIR = "processes"  # in state_dir: a file per running mesh, the process groups it started
TERM_GRACE = 1.0  # seconds a leftover gets to exit on SIGTERM before it is killed
KILL_WAIT = 1.0  # SIGKILL cannot be refused: this only bounds the wait to see it take effect
COMMAND_SHOWN = 200  # characters of a reaped process's command line that are logged
COMPACT_AFTER = 256  # journal lines past the live groups' before the journal is rewritten

log = logging.getLogger("mcpmesh.orphans")


def state_id(state_dir: Path) -> str:
    """The same for every mesh on this state_dir, different for any other directory."""
    return hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Owner:
    """The mesh a process belongs to: its state_dir and the mesh process itself."""

    state: str
    pid: int
    start: int  # the mesh process's start time (clock ticks since boot, /proc/<pid>/stat)

    @classmethod
    def of(cls, state_dir: Path, pid: int | None = None) -> Owner:
        pid = os.getpid() if pid is None else pid
        return cls(state_id(state_dir), pid, _start_time(pid) or 0)

    @classmethod
    def parse(cls, marker: str) -> Owner | None:
        state, _, rest = marker.partition(":")
        pid, _, start = rest.partition(":")
        try:
            return cls(state, int(pid), int(start))
        except ValueError:
            return None

    @property
    def marker(self) -> str:
        return f"{self.state}:{self.pid}:{self.start}"

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start


class ProcessLedger:
    """Marks and journals the processes one mesh starts (each leads a process group of its own).
    Without a state_dir it does neither (a server built outside a mesh)."""

    def __init__(self, state_dir: Path | None = None):
        self.owner = None if state_dir is None else Owner.of(state_dir)
        self.environment = {} if self.owner is None else {OWNER_VARIABLE: self.owner.marker}
        self._path: Path | None = None
        if state_dir is not None and self.owner is not None:
            name = f"{self.owner.pid}-{self.owner.start}-{secrets.token_hex(4)}"  # two meshes in one process
            self._path = Path(state_dir) / JOURNAL_DIR / name
        self._groups: dict[int, int] = {}  # process group id (its leader's pid): the leader's start time
        self._lines = 0
        self._stale = True  # the file does not hold what _groups does: rewrite it whole
        self._warned = False

    def started(self, pid: int) -> None:
        start = _start_time(pid)
        if start is not None:  # None: gone already, or no /proc to tell a reused pid by
            self._groups[pid] = start
            self._write(f"+ {pid} {start}\n")

    def ended(self, pid: int) -> None:
        if self._groups.pop(pid, None) is not None:
            self._write(f"- {pid}\n")

    def close(self) -> None:
        """Once the mesh has stopped its processes itself: nothing of it is left to sweep."""
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()

    def _write(self, line: str) -> None:
        if self._path is None:
            return
        try:
            if self._stale or self._lines > 2 * len(self._groups) + COMPACT_AFTER:
                self._rewrite(self._path)
            else:
                with open(self._path, "a", encoding="ascii") as journal:
                    journal.write(line)
                self._lines += 1
        except OSError as exc:  # a full disk must not stop a spawn: the marker sweep still finds them
            self._stale = True
            if not self._warned:
                self._warned = True
                log.warning("cannot journal server processes in %s: %s", self._path, exc.strerror or exc)

    def _rewrite(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".tmp")
        partial.write_text("".join(f"+ {pid} {start}\n" for pid, start in self._groups.items()), encoding="ascii")
        os.replace(partial, path)
        self._lines, self._stale = len(self._groups), False


@dataclass(frozen=True)
class Leftover:
    """A process that a mesh no longer running started (or one of its descendants)."""

    pid: int
    start: int
    server: str | None  # from its MCPMESH_SERVER marker, when it still carries one
    command: str


async def sweep(state_dir: Path, redact: Callable[[str], str] = str) -> list[Leftover]:
    """Reap what meshes on this state_dir left when they were killed: processes carrying its marker
    whose mesh is gone, and members of the process groups those meshes journalled whose leader still
    runs. SIGTERM, then SIGKILL; bounded by TERM_GRACE + KILL_WAIT. Never a process of another
    state_dir, of a mesh still running, of another user, nor this process or one of its ancestors."""
    journals, found = _find(Path(state_dir), redact)
    _signal(found, signal.SIGTERM)
    await _wait_gone(found, TERM_GRACE)
    _signal(found, signal.SIGKILL)
    await _wait_gone(found, KILL_WAIT)
    for leftover in found:
        log.warning(
            "reaped pid=%d server=%s command=%s (left running by a mesh on this state_dir that was killed)",
            leftover.pid,
            leftover.server or "?",
            leftover.command,
        )
    for journal in journals:
        with contextlib.suppress(OSError):
            journal.unlink()
    return found


def _find(state_dir: Path, redact: Callable[[str], str]) -> tuple[list[Path], list[Leftover]]:
    """The journals of meshes gone from this state_dir, and what they left running."""
    if not Path("/proc/self/stat").exists():
        return [], []
    journals, groups = _dead_journals(state_dir / JOURNAL_DIR)
    return journals, list(_leftovers(state_id(state_dir), groups, redact))


async def _wait_gone(leftovers: list[Leftover], within: float) -> None:
    """Until every one has ended, or `within` seconds: a pidfd turns readable when its process ends."""
    with anyio.move_on_after(within):
        for leftover in leftovers:
            try:
                fd = os.pidfd_open(leftover.pid)
            except OSError:  # gone already (or no pidfds here: SIGKILL, which cannot be refused, follows)
                continue
            try:
                if _running(leftover):  # checked once the pidfd is open: that pid is not a reused one
                    await anyio.wait_readable(fd)
            finally:
                os.close(fd)


def _dead_journals(directory: Path) -> tuple[list[Path], dict[int, int]]:
    """The journals of meshes no longer running, and the groups they left open (pgid: start)."""
    journals: list[Path] = []
    groups: dict[int, int] = {}
    try:
        entries = list(directory.iterdir())
    except OSError:
        return journals, groups
    for path in entries:
        pid, _, rest = path.name.partition("-")
        start = rest.partition("-")[0]
        if not (pid.isdigit() and start.isdigit()) or _start_time(int(pid)) == int(start):
            continue  # not a journal, or its mesh still runs (on this state_dir: not ours to touch)
        journals.append(path)
        with contextlib.suppress(OSError, ValueError):
            for line in path.read_text(encoding="ascii").splitlines():
                sign, pgid, *leader = line.split()
                if sign == "+":
                    groups[int(pgid)] = int(leader[0])
                else:
                    groups.pop(int(pgid), None)
    return journals, groups


def _leftovers(ours: str, groups: dict[int, int], redact: Callable[[str], str]) -> Iterator[Leftover]:
    spared = _ancestry(os.getpid()) | {1}
    uid = os.getuid()
    open_groups = {pgid for pgid, start in groups.items() if _start_time(pgid) == start}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in spared:
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            environ = _variables(Path(f"/proc/{entry}/environ").read_bytes())
        except OSError:
            continue
        stat = _stat(int(entry))
        if stat is None or stat.state in ("Z", "X"):
            continue
        owner = Owner.parse(environ.get(OWNER_VARIABLE, ""))
        if (owner is not None and owner.state == ours and not owner.alive()) or stat.pgid in open_groups:
            server = environ.get(MARKER_VARIABLE, "").rpartition(":")[0] or None
            yield Leftover(int(entry), stat.start, server, redact(_command(int(entry)))[:COMMAND_SHOWN])


def _variables(environ: bytes) -> dict[str, str]:
    wanted = {OWNER_VARIABLE, MARKER_VARIABLE}
    found: dict[str, str] = {}
    for item in environ.split(b"\0"):
        name, _, value = item.decode("utf-8", "replace").partition("=")
        if name in wanted:
            found[name] = value
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return "?"


def _signal(leftovers: Iterable[Leftover], sig: signal.Signals) -> None:
    for leftover in leftovers:
        if _running(leftover):  # still that process, not a reused pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(leftover.pid, sig)


def _running(leftover: Leftover) -> bool:
    stat = _stat(leftover.pid)
    return stat is not None and stat.start == leftover.start and stat.state not in ("Z", "X")


def _ancestry(pid: int) -> set[int]:
    """pid and every process above it."""
    chain = {pid}
    while (stat := _stat(pid)) is not None and stat.ppid > 1 and stat.ppid not in chain:
        pid = stat.ppid
        chain.add(pid)
    return chain


def _start_time(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else stat.start


class _Stat(NamedTuple):
    start: int
    pgid: int
    state: str
    ppid: int


def _stat(pid: int) -> _Stat | None:
    """What /proc/<pid>/stat says of a process; None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()  # the name may hold spaces; fields[n - 3] is field n
    return _Stat(int(fields[19]), int(fields[2]), fields[0].decode(), int(fields[1]))
