"""A circuit breaker per server process: after `threshold` client requests in a row time out,
requests are refused at once for `cooldown` seconds instead of piling up on a process that does
not answer; then one trial request is let through, and its answer closes the circuit again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from enum import StrEnum

from mcpmesh.router.outcomes import Outcome


class Circuit(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Any answer at all (even a JSON-RPC error, or a tool's own error) shows the process is serving.
ANSWERED = frozenset({Outcome.OK, Outcome.ERROR, Outcome.TOOL_ERROR})


class CircuitBreaker:
    def __init__(self, threshold: int, cooldown: float, on_change: Callable[[Circuit, str], None] | None = None):
        self.threshold = threshold
        self.cooldown = cooldown
        self.on_change = on_change
        self.state = Circuit.CLOSED
        self.failures = 0  # timeouts in a row
        self.refused = 0  # requests answered at once while open
        self.opened_at: float | None = None
        self._trial = False  # a half-open circuit's one trial request is in flight
        self._timer: asyncio.TimerHandle | None = None

    def refusal(self) -> str | None:
        """Why a request may not go to the process now, or None to send it."""
        if self.state == Circuit.CLOSED:
            return None
        if self.state == Circuit.HALF_OPEN and not self._trial:
            self._trial = True
            return None
        self.refused += 1
        left = max(0.0, self.cooldown - (time.monotonic() - (self.opened_at or 0.0)))
        waiting = "a trial request is in flight" if self.state == Circuit.HALF_OPEN else f"trial in {left:.0f}s"
        return f"circuit open after {self.failures} requests in a row timed out ({waiting})"

    def record(self, outcome: str) -> None:
        """The end of a request that was sent."""
        if outcome in ANSWERED:
            self.failures = 0
            if self.state != Circuit.CLOSED:
                self._set(Circuit.CLOSED, "a trial request was answered")
        elif outcome == Outcome.TIMEOUT:
            self.failures += 1
            if self.state == Circuit.HALF_OPEN or (self.state == Circuit.CLOSED and self.failures >= self.threshold):
                self._open()
        elif self.state == Circuit.HALF_OPEN:
            self._trial = False  # the trial was cancelled: it proved nothing, the next request tries

    def close(self) -> None:
        """The process is gone: nothing more to time."""
        if self._timer is not None:
            self._timer.cancel()

    def _open(self) -> None:
        self.opened_at = time.monotonic()
        self._set(
            Circuit.OPEN, f"{self.failures} requests in a row timed out; refusing requests for {self.cooldown:g}s"
        )
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.cooldown, self._half_open)

    def _half_open(self) -> None:
        if self.state == Circuit.OPEN:
            self._set(Circuit.HALF_OPEN, "cooldown over: the next request is a trial")

    def _set(self, state: Circuit, why: str) -> None:
        self.state, self._trial = state, False
        if self.on_change is not None:
            self.on_change(state, why)
