"""What Upstream and the supervisor need from a server's connection, whatever carries it: a child
process's pipes (`process.ChildProcess`) or HTTP to a remote server (`backend.remote.RemoteConnection`)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Protocol


class Connection(Protocol):
    """One live connection to one server; single-use: once it ends, the supervisor makes a new one."""

    dropped: Counter[str]
    """Messages received and discarded, by reason."""
    stderr_tail: deque[str]
    """The latest diagnostic lines: a process's stderr, or a remote connection's events."""

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int | None:
        """The process id, or None when no local process serves this connection."""

    @property
    def returncode(self) -> int | None:
        """None while the connection lives; then a code that `describe_exit` explains."""

    @property
    def backlog(self) -> int:
        """Bytes written and not yet taken by the server (bounded: past a cap, writes are refused)."""

    def write(self, data: bytes) -> None:
        """Queue one JSON-RPC message (one line, newline-terminated) for sending; never blocks.
        Raises BrokenPipeError once the connection can no longer send."""

    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109  # a bound, not a cancellation
        """Wait until what was written may be followed by more (flow control); with `timeout`,
        no longer than that (a server that stops reading must not hold the caller)."""

    def lines(self) -> AsyncIterator[bytes]:
        """Every message received, one raw JSON text per item, until the connection ends."""

    def note_dropped(self, reason: str) -> None:
        """Count (and log) a received message the reader discarded."""

    async def wait(self) -> int:
        """Return the code once the connection has ended for good (the supervisor then starts anew)."""

    async def stop(self) -> int:
        """End the connection and everything it holds; safe to call more than once."""

    def describe_exit(self, code: int) -> str:
        """Why the connection ended, for states and error messages (`exited with code 1`)."""
