"""A server's stderr as numbered lines, kept across restarts, so `mcpmesh logs -f` can follow it."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

STDERR_KEEP_LINES = 1000  # per server; older lines are forgotten (the process logs them too)


@dataclass(frozen=True, slots=True)
class Line:
    n: int  # 1, 2, 3 ... for the life of the mesh: a reader's cursor
    at: float
    pid: int | None
    text: str


class StderrLog:
    """The latest lines of every process of one server, numbered in arrival order."""

    def __init__(self, keep: int = STDERR_KEEP_LINES):
        self._lines: deque[Line] = deque(maxlen=keep)
        self.last = 0  # the number of the newest line (0: none yet)

    def append(self, pid: int | None, text: str) -> None:
        self.last += 1
        self._lines.append(Line(self.last, time.time(), pid, text))

    def after(self, n: int, limit: int) -> list[Line]:
        """Lines numbered above n, oldest first, at most `limit` (page on with the last number)."""
        if n >= self.last:
            return []
        first = self.last - len(self._lines) + 1  # the number of the oldest line still kept
        start = max(0, n + 1 - first)
        return [self._lines[i] for i in range(start, min(len(self._lines), start + limit))]
