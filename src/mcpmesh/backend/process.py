"""One child process: spawn in its own process group, bounded stdout lines, stderr tail, stop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

from mcpmesh.backend.stderr_lines import Budget, StderrLines
from mcpmesh.errors import CommandNotFound, ServerNotReading, SpawnError

NETWORK_ENV = (
    *("SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE"),
    *("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"),
)
"""How a machine reaches the network (a company CA, a proxy): without them `uvx` and `npx` servers
cannot fetch their packages behind a proxy or a TLS-inspecting firewall."""
ENV_ALLOWLIST = (
    *("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ"),
    *NETWORK_ENV,
)
"""Variables a server inherits from mcpmesh; everything else must be configured (as the SDK does)."""

MARKER_VARIABLE = "MCPMESH_SERVER"
"""Set in every server's environment (name and a random tag) and inherited by its descendants, so
that the stop sequence can find every process a server started."""

STDIN_CLOSE_GRACE = 2.0  # a well-behaved server exits on stdin EOF (the portable shutdown signal)
SIGTERM_GRACE = 2.0  # time to clean up after SIGTERM before the group is killed
READ_CHUNK = 256 * 1024  # large reads keep multi-MiB tool results cheap to assemble
STDERR_LINE_CAP = 64 * 1024  # a stderr line longer than this is truncated, never buffered whole
STDERR_TAIL_LINES = 200
STDERR_LOG_RATE = 50.0  # stderr lines per second a server may put into the mesh's log (bursts: below)
STDERR_LOG_BURST = 200  # a chatty server cannot flood the log; the rest is counted, and kept in its tail
STDERR_KEEP_RATE = 1000.0  # stderr lines per second kept at all (tail, `mcpmesh logs`); beyond: counted only
STDERR_KEEP_BURST = 2000
STDERR_FLOOD_PAUSE = 0.005  # seconds between reads while over the keep rate: at most ~50 MB/s is read
STDERR_DROP_NOTE_EVERY = 1.0  # seconds between the lines that say how many stderr lines were dropped

StderrSink = Callable[[int, str], None]  # (pid, line) for every stderr line, after redaction

PR_SET_PDEATHSIG = 1  # from linux/prctl.h

HELD_WRITES_CAP = 64 * 1024  # stdin bytes held back to join one write; asyncio's high-water mark
INPUT_BACKLOG_CAP = 16 * 1024 * 1024  # stdin bytes written and not taken yet: past this the server is not reading

log = logging.getLogger("mcpmesh.process")


def child_environment(extra: Mapping[str, str], inherit: Sequence[str] = ()) -> dict[str, str]:
    names = set(ENV_ALLOWLIST) | set(inherit)
    env = {k: v for k, v in os.environ.items() if k in names}
    env.update(extra)
    return env


def resolve_command(command: str, env: Mapping[str, str]) -> str:
    """Find argv[0] on the child's PATH, then beside our own interpreter (an unactivated venv)."""
    if os.sep in command:
        if os.access(command, os.X_OK):
            return command
        raise CommandNotFound(f"command not found or not executable: {command}")
    search = os.pathsep.join(filter(None, [env.get("PATH", os.defpath), str(Path(sys.executable).parent)]))
    found = shutil.which(command, path=search)
    if found is None:
        raise CommandNotFound(f"command not found on PATH: {command}")
    return found


class ChildProcess:
    """A spawned server with its pipes; owns nothing else. Use `stop()` to end it."""

    def __init__(
        self,
        name: str,
        proc: asyncio.subprocess.Process,
        max_line_bytes: int,
        exited: asyncio.Event,
        marker: str,
        redact: Callable[[str], str] = str,
        on_stderr: StderrSink | None = None,
    ):
        self.name = name
        self.proc = proc
        self._exited = exited
        self._marker = marker.encode()
        self.pid = proc.pid
        self.max_line_bytes = max_line_bytes
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.dropped: Counter[str] = Counter()  # stdout lines discarded, by reason
        self._server_log = logging.getLogger(f"mcpmesh.server.{name}")
        self._redact = redact
        self._on_stderr = on_stderr
        self._log_budget = Budget(STDERR_LOG_RATE, STDERR_LOG_BURST)
        self._stderr_lines = StderrLines(STDERR_LINE_CAP, Budget(STDERR_KEEP_RATE, STDERR_KEEP_BURST))
        self._dropped_noted = (0, 0.0)  # (lines dropped, when) as last said in the tail and the log
        self._log_warned_at = 0.0  # when the log last said how many lines it left out (once a second at most)
        self._loop = asyncio.get_running_loop()
        self._later: list[bytes] | None = None  # lines written after the first in this turn of the loop
        self._later_bytes = 0
        self._stderr_task = asyncio.get_running_loop().create_task(self._pump_stderr())

    @classmethod
    async def spawn(
        cls,
        name: str,
        command: str,
        args: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None,
        max_line_bytes: int,
        *,
        redact: Callable[[str], str] = str,
        on_stderr: StderrSink | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> ChildProcess:
        """Start the server. `redact` masks secrets in its stderr lines before they are kept or
        logged; `on_stderr` also receives every (masked) line; `on_exit` gets its pid the moment it
        exits (from the event loop, whether anyone awaits it or not)."""
        program = resolve_command(command, env)
        marker = f"{name}:{secrets.token_hex(8)}"
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ExitAwareProtocol(READ_CHUNK, loop, on_exit),
                program,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**env, MARKER_VARIABLE: marker},
                cwd=cwd,
                start_new_session=True,  # own process group: the stop sequence reaches wrappers' children
                preexec_fn=_die_with(os.getpid()),
            )
        except OSError as exc:
            raise SpawnError(f"cannot start {program}: {exc.strerror or exc}") from exc
        proc = asyncio.subprocess.Process(transport, protocol, loop)
        log.info("spawned %s pid=%d argv=%s", name, proc.pid, redact(str([program, *args])))
        return cls(name, proc, max_line_bytes, protocol.exited, marker, redact, on_stderr)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def backlog(self) -> int:
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing():
            return 0
        return stdin.transport.get_write_buffer_size() + self._later_bytes

    def write(self, data: bytes) -> None:
        """Queue one framed line for the child's stdin (never blocks; see `drain`).

        The first line in a turn of the event loop is written at once; lines written after it in
        the same turn (many clients' requests arrive together under load) go out together in one
        `writev` at the end of the turn: one syscall instead of one per request, and no delay for
        a request that comes alone.
        """
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing():
            raise BrokenPipeError(f"{self.name}: stdin is closed")
        backlog = self.backlog
        if backlog > INPUT_BACKLOG_CAP:  # the mesh must not grow without bound behind it
            raise ServerNotReading(f"server {self.name!r} is not reading its input ({backlog} bytes waiting)")
        if self._later is None:
            stdin.write(data)
            self._later = []
            self._later_bytes = 0
            self._loop.call_soon(self._end_turn)
        else:
            self._later.append(data)
            self._later_bytes += len(data)
            if self._later_bytes >= HELD_WRITES_CAP:  # flow control (`drain`) must see big writes
                self._flush()

    def _flush(self) -> None:
        later, self._later = self._later, []
        self._later_bytes = 0
        stdin = self.proc.stdin
        if later and stdin is not None and not stdin.is_closing():
            stdin.writelines(later)

    def _end_turn(self) -> None:
        self._flush()
        self._later = None

    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109  # a bound, not a cancellation
        stdin = self.proc.stdin
        if stdin is None:
            return
        if timeout is None or not stdin.transport.get_write_buffer_size():
            await stdin.drain()  # nothing waits to be written: it cannot block (and a deadline costs ~6 µs)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await stdin.drain()

    async def lines(self) -> AsyncIterator[bytes]:
        """Yield stdout lines (without the newline); over-long lines are dropped and counted."""
        stdout = self.proc.stdout
        assert stdout is not None
        buffer = bytearray()
        discarding = False
        while True:
            chunk = await stdout.read(READ_CHUNK)
            if not chunk:
                return
            start = 0
            while (newline := chunk.find(b"\n", start)) != -1:
                if discarding:
                    discarding = False
                elif len(buffer) + newline - start > self.max_line_bytes:
                    self._drop("oversize")
                elif not buffer:  # the usual case, a whole line within one read: one copy, not three
                    yield chunk[start:newline]
                else:
                    buffer += chunk[start:newline]
                    yield bytes(buffer)
                buffer.clear()
                start = newline + 1
            if not discarding:
                buffer += chunk[start:]
                if len(buffer) > self.max_line_bytes:
                    self._drop("oversize")
                    buffer.clear()
                    discarding = True

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        log.warning("%s: dropped a stdout line (%s)", self.name, reason)

    def note_dropped(self, reason: str) -> None:
        self._drop(reason)

    @property
    def stderr_dropped(self) -> int:
        """Stderr lines neither kept nor logged: over STDERR_KEEP_RATE."""
        return self._stderr_lines.budget.skipped

    async def _pump_stderr(self) -> None:
        stderr = self.proc.stderr
        assert stderr is not None
        while chunk := await stderr.read(READ_CHUNK):
            for text in self._stderr_lines.feed(chunk):
                self._keep_stderr(text)
            self._note_dropped(final=False)
            # Bounded work per turn of the loop: a server flooding its stderr (the pipe is never
            # empty) must not keep the other servers' answers waiting. Over the rate, reads are
            # spaced too: the flooder waits on its full pipe instead of the mesh spinning on it.
            await asyncio.sleep(STDERR_FLOOD_PAUSE if self._stderr_lines.over_rate else 0)
        for text in self._stderr_lines.finish():
            self._keep_stderr(text)
        self._note_dropped(final=True)

    def _keep_stderr(self, line: str) -> None:
        text = self._redact(line)  # only lines kept are redacted: dropped ones cost nothing
        self.stderr_tail.append(text)
        if self._on_stderr is not None:
            self._on_stderr(self.pid, text)
        if self._log_budget.take():
            now = time.monotonic()
            if self._log_budget.skipped and now - self._log_warned_at >= STDERR_DROP_NOTE_EVERY:
                self._server_log.warning("(%d stderr lines not logged: over the rate)", self._log_budget.skipped)
                self._log_budget.skipped = 0
                self._log_warned_at = now
            self._server_log.info("%s", text)

    def _note_dropped(self, final: bool) -> None:
        """Say, at most once a second (and at the end), how many lines were dropped since last said."""
        said, at = self._dropped_noted
        now = time.monotonic()
        if self.stderr_dropped == said or (not final and now - at < STDERR_DROP_NOTE_EVERY):
            return
        note = f"({self.stderr_dropped - said} stderr lines dropped: over {STDERR_KEEP_RATE:g} lines/s)"
        self._dropped_noted = (self.stderr_dropped, now)
        self.stderr_tail.append(note)
        if self._on_stderr is not None:
            self._on_stderr(self.pid, note)
        self._server_log.warning("%s", note)

    async def wait(self) -> int:
        """The exit code once the process has exited, even while a descendant holds its pipes
        (asyncio's own `Process.wait()` waits for the pipes to close too)."""
        await self._exited.wait()
        code = self.proc.returncode
        assert code is not None
        return code

    async def stop(self) -> int:
        """Close stdin, wait; SIGTERM the group, wait; SIGKILL the group and any escaped descendant."""
        descendants = _descendants(self.pid)
        with contextlib.suppress(Exception):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        code = await self._wait_for(STDIN_CLOSE_GRACE)
        if code is None:
            _signal_group(self.pid, signal.SIGTERM)
            code = await self._wait_for(SIGTERM_GRACE)
        # Even after a clean exit, children left in the group, or that setsid'd away and were
        # re-parented when their parent died, are ended: found by group, by tree, and by marker.
        _signal_group(self.pid, signal.SIGKILL)
        for pid in descendants | _descendants(self.pid) | _marked(self._marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if code is None:
            code = await self.wait()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._stderr_task, 1.0)
        log.info("stopped %s pid=%d code=%s", self.name, self.pid, code)
        return code

    def describe_exit(self, code: int) -> str:
        return describe_exit(code)

    async def _wait_for(self, seconds: float) -> int | None:
        try:
            return await asyncio.wait_for(asyncio.shield(self.wait()), seconds)
        except TimeoutError:
            return None


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's subprocess protocol, plus an event set the moment the process exits."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop, on_exit: Callable[[int], None] | None = None):
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()
        self._on_exit = on_exit
        self._pid = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._pid = cast(asyncio.SubprocessTransport, transport).get_pid()  # uvloop's is no subclass

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()
        if self._on_exit is not None:
            self._on_exit(self._pid)


def _die_with(parent: int) -> Callable[[], None] | None:
    """On Linux, what the child runs between fork and exec so that the kernel SIGKILLs it when
    the mesh dies, even by kill -9 (none elsewhere). The signal follows the forking thread, which
    is the event loop's (asyncio forks there), and no grandchild inherits it: the start-up sweep
    (supervision/orphans.py) reaps those."""
    prctl = _prctl()
    if prctl is None:
        return None

    def preexec() -> None:  # runs in the forked child: kept to the two calls it needs
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the mesh died between fork and prctl: nobody is left to kill us
            os._exit(1)

    return preexec


@functools.cache
def _prctl() -> Callable[[int, int], int] | None:
    """libc's prctl, loaded once before any fork (loading it in the child could deadlock)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def describe_exit(code: int) -> str:
    """A process's exit code in words."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _marked(marker: bytes) -> set[int]:
    """Processes whose environment carries this server's marker: its descendants wherever they
    went (a daemonizing grandchild leaves the group and, once orphaned, the tree)."""
    wanted = MARKER_VARIABLE.encode() + b"=" + marker
    found: set[int] = set()
    for entry in _proc_entries():
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.add(int(entry))
        except OSError:
            continue
    return found


def _proc_entries() -> list[str]:
    try:
        return [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def _descendants(root: int) -> set[int]:
    """All live descendants of root, from /proc (Linux); empty elsewhere."""
    children: dict[int, list[int]] = {}
    for entry in _proc_entries():
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 4 is the ppid; the command name in field 2 may hold spaces, so split after ')'.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
