"""A POST's wait for its call's first message, which decides whether the answer is one JSON body
or an SSE stream; one timer gives up on all the waits that last too long."""

from __future__ import annotations

import time

from mcpmesh.jsonrpc import Message
from mcpmesh.router.expiry import OldestFirstExpiry
from mcpmesh.router.outbox import Outbox


class FirstReplyWait:
    """Gives up on waits for a call's first message after `interval`, with one timer for them all.

    Each POST waits for its call's first message to choose a JSON or an SSE answer; a wait that
    lasts `interval` gives up (TimeoutError from `Outbox.get`) and the answer becomes a stream with
    keep-alives."""

    __slots__ = ("_since", "_expiry")

    def __init__(self, interval: float):
        self._since: dict[Outbox, float] = {}  # waiting outboxes, oldest first
        self._expiry = OldestFirstExpiry(interval, lambda: self._since.items(), self._give_up)

    async def first(self, outbox: Outbox) -> Message | None:
        """The outbox's first message (None if it closed empty); TimeoutError after `interval`."""
        if not outbox.empty() or outbox.closed:
            return await outbox.get()
        self._since[outbox] = time.monotonic()
        self._expiry.arm()
        try:
            return await outbox.get()
        finally:
            self._since.pop(outbox, None)

    def _give_up(self, outbox: Outbox) -> None:
        del self._since[outbox]
        outbox.give_up()
