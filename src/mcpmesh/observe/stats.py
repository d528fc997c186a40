"""Recent traffic per server for the dashboard and GET /v1/stats: calls counted into one bucket per
second over the last WINDOW seconds (count, errors, a small latency histogram), so a rate, an error
rate and p50/p99 over any recent span are a sum of buckets. O(1) per call, fixed memory per server."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from mcpmesh.router.outcomes import Outcome
from mcpmesh.router.session import Call

WINDOW = 600  # seconds kept: the dashboard's chart spans the last 10 minutes
STEP = 10  # seconds per point of the series
RECENT = 60  # seconds the summary (rate, error rate, p50, p99) covers
# Outcomes that mean the server did not serve the call; the same set the `McpServerErrorRate` alert
# counts. A tool error is the tool's answer; cancelled and session_ended are the client's doing.
ERRORS = frozenset({Outcome.ERROR, Outcome.TIMEOUT, Outcome.EXITED})
# Latency bins: bin 0 holds calls up to FLOOR, bin i those up to FLOOR * 2**(i / PER_OCTAVE); a
# percentile is the slowest call of the bin that holds it, so it is at most ~19 % above the true
# value (exact when that bin's calls took the same time); the last bin holds the rest.
FLOOR = 0.0001  # 0.1 ms
PER_OCTAVE = 4
BINS = 96  # up to 0.1 ms * 2**(95/4), about 14 minutes


def bin_of(seconds: float) -> int:
    if seconds <= FLOOR:
        return 0
    return min(BINS - 1, math.ceil(math.log2(seconds / FLOOR) * PER_OCTAVE))


def upper_edge(index: int) -> float:
    return FLOOR * 2 ** (index / PER_OCTAVE)


class _Second:
    """The calls that ended in one wall-clock second."""

    __slots__ = ("at", "count", "errors", "bins", "slowest")

    def __init__(self) -> None:
        self.at = -1
        self.count = 0
        self.errors = 0
        self.bins: dict[int, int] = {}  # bin -> calls; at most BINS keys
        self.slowest: dict[int, float] = {}  # bin -> its slowest call

    def reset(self, at: int) -> None:
        self.at, self.count, self.errors = at, 0, 0
        self.bins.clear()
        self.slowest.clear()


class Span:
    """Buckets added up: what a summary or one point of the series reports."""

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.bins: dict[int, int] = {}
        self.slowest: dict[int, float] = {}

    def add(self, second: _Second) -> None:
        self.count += second.count
        self.errors += second.errors
        for index, n in second.bins.items():
            self.bins[index] = self.bins.get(index, 0) + n
            self.slowest[index] = max(self.slowest.get(index, 0.0), second.slowest[index])

    def percentile(self, q: float) -> float | None:
        """The slowest call in the bin holding the q-th call (nearest rank): not below the true
        value, and within that bin's width above it."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                return self.slowest[index]
        raise AssertionError("the bins hold fewer calls than counted")  # not reached


class ServerStats:
    """One server's ring of WINDOW one-second buckets, and its calls in flight."""

    def __init__(self) -> None:
        self.ring = [_Second() for _ in range(WINDOW)]
        self.in_flight = 0

    def record(self, at: int, seconds: float, error: bool) -> None:
        bucket = self.ring[at % WINDOW]
        if bucket.at != at:
            bucket.reset(at)  # a second that left the window: its slot is reused
        bucket.count += 1
        bucket.errors += error
        index = bin_of(seconds)
        bucket.bins[index] = bucket.bins.get(index, 0) + 1
        if seconds > bucket.slowest.get(index, -1.0):
            bucket.slowest[index] = seconds

    def span(self, first: int, last: int) -> Span:
        """The calls that ended in the seconds first..last (inclusive, within the window)."""
        span = Span()
        for at in range(max(first, last - WINDOW + 1), last + 1):
            bucket = self.ring[at % WINDOW]
            if bucket.at == at:
                span.add(bucket)
        return span


class TrafficStats:
    """The CallObserver behind /v1/stats: every server's recent calls, by the second they ended."""

    def __init__(
        self,
        servers: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.clock = clock  # buckets are wall-clock seconds, so the series can be drawn against time
        self.monotonic = monotonic  # a call's duration, measured as Call.started is
        self.servers = {name: ServerStats() for name in servers}

    def _of(self, server: str) -> ServerStats:
        stats = self.servers.get(server)
        if stats is None:
            stats = self.servers[server] = ServerStats()
        return stats

    # -- CallObserver ------------------------------------------------------------------------
    def call_started(self, server: str, call: Call) -> None:
        self._of(server).in_flight += 1

    def call_done(self, server: str, call: Call, outcome: str) -> None:
        stats = self._of(server)
        stats.in_flight -= 1
        stats.record(int(self.clock()), max(0.0, self.monotonic() - call.started), outcome in ERRORS)

    # -- reading -----------------------------------------------------------------------------
    def summary(self, server: str) -> dict[str, Any]:
        """The last RECENT seconds (this one included) and the series of the last WINDOW seconds in
        STEP-second points, aligned to multiples of STEP so points keep their times between reads."""
        stats = self._of(server)
        now = int(self.clock())
        recent = stats.span(now - RECENT + 1, now)
        series = []
        last_point = now - now % STEP
        for start in range(last_point - WINDOW + STEP, last_point + 1, STEP):
            point = stats.span(start, start + STEP - 1)
            series.append(
                {
                    "at": start,
                    "requests": point.count,
                    "errors": point.errors,
                    "p50": point.percentile(0.5),
                    "p99": point.percentile(0.99),
                }
            )
        return {
            "requests": recent.count,
            "rate": recent.count / RECENT,
            "errors": recent.errors,
            "error_rate": recent.errors / recent.count if recent.count else None,
            "p50": recent.percentile(0.5),
            "p99": recent.percentile(0.99),
            "in_flight": stats.in_flight,
            "series": series,
        }
