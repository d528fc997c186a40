"""A server's stderr cut into bounded lines, cheaply: over-long lines are cut, and lines over the
rate are counted without being copied, decoded or redacted (a flooding server costs the event
loop a `count` per chunk, not a Python step per line)."""

from __future__ import annotations

import codecs
import time
from collections.abc import Iterator


class Budget:
    """A token bucket: `rate` takes per second, up to `burst` at once; counts what it refused."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.skipped = 0
        self._at = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self) -> bool:
        self.refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.skipped += 1
        return False


class StderrLines:
    """Feed chunks, get text lines of at most `cap` bytes; lines beyond `budget` are only counted."""

    def __init__(self, cap: int, budget: Budget):
        self.cap = cap
        self.budget = budget
        self._buffer = bytearray()
        self._discarding = False  # inside a line already cut (or dropped): skip to its newline

    def feed(self, chunk: bytes) -> Iterator[str]:
        start = 0
        while start < len(chunk):
            if not self._buffer and not self._discarding and self._exhausted():
                newlines = chunk.count(b"\n", start)
                rest = chunk.rfind(b"\n", start) + 1 if newlines else start  # a line that goes on
                self.budget.skipped += newlines + (rest < len(chunk))
                self._discarding = rest < len(chunk)  # counted now; skip it up to its newline
                break
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline == -1 else newline
            if not self._discarding:
                room = self.cap - len(self._buffer)
                self._buffer += chunk[start : start + min(room, end - start)]
                if end - start > room:  # longer than the cap: keep its beginning, skip the rest
                    self._discarding = True
                    yield from self._emit(cut=True)
            if newline == -1:
                break
            if self._discarding:
                self._discarding = False
            else:
                yield from self._emit(cut=False)
            start = newline + 1

    @property
    def over_rate(self) -> bool:
        """Whether lines are being dropped now (the budget is spent)."""
        return self.budget.tokens < 1

    def _exhausted(self) -> bool:
        self.budget.refill()
        return self.budget.tokens < 1

    def finish(self) -> Iterator[str]:
        """The last line, when the stream ended without a newline."""
        if self._buffer and not self._discarding:
            yield from self._emit(cut=False)

    def _emit(self, cut: bool) -> Iterator[str]:
        line = bytes(self._buffer)
        self._buffer.clear()
        if self.budget.take():
            # A cut may fall inside a character: decode only whole characters (no trailing U+FFFD,
            # so a secret's beginning there is still recognised and masked).
            yield codecs.getincrementaldecoder("utf-8")("replace").decode(line, final=not cut).rstrip("\r\n")
