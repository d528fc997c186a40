"""What waits for one client stream: a bounded queue of messages, read by the HTTP response that
streams them (a POST's JSON or SSE answer, a GET stream, a legacy SSE connection)."""

from __future__ import annotations

import asyncio
from collections import deque

from mcpmesh.jsonrpc import Message

OUTBOX_NOTIFICATION_CAP = 4096  # notifications queued for a slow client beyond this are dropped


class Outbox:
    """Messages waiting for one client stream. Notifications past the cap are dropped; a final
    response never is, and ends the stream. One reader at a time (the stream that sends them)."""

    __slots__ = ("_items", "_waiter", "closed", "dropped")

    def __init__(self) -> None:
        self._items: deque[Message] = deque()
        # A bare future, not an anyio or asyncio Event: there is one outbox per request, and
        # anyio.Event() and asyncio's Event.wait() and timeout() each ask for the running loop (a
        # getpid() syscall on 3.11), several times per request; the gateway runs on asyncio only.
        self._waiter: asyncio.Future[bool] | None = None
        self.closed = False
        self.dropped = 0

    def put(self, msg: Message) -> bool:
        if self.closed or len(self._items) >= OUTBOX_NOTIFICATION_CAP:
            self.dropped += 1
            return False
        self._items.append(msg)
        self._wake(True)
        return True

    def push(self, msg: Message) -> None:
        """Queue a message that must not be dropped (a response), cap or not."""
        if not self.closed:
            self._items.append(msg)
            self._wake(True)

    def finish(self, msg: Message | None = None) -> None:
        """Queue the last message (if any) and close; later puts are dropped."""
        if self.closed:
            return
        if msg is not None:
            self._items.append(msg)
        self.closed = True
        self._wake(True)

    def empty(self) -> bool:
        return not self._items

    async def get(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109  # a timer wakes the wait: nothing is cancelled, so no message can be lost to a timeout
        """The next message, or None once closed and drained; TimeoutError when `timeout` seconds
        pass with nothing (messages that come later stay queued)."""
        while not self._items:
            if self.closed:
                return None
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _settle, waiter, False)
            try:
                woken = await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not woken:
                raise TimeoutError
        return self._items.popleft()

    def give_up(self) -> None:
        """End a wait in progress with TimeoutError (its messages stay queued)."""
        self._wake(False)

    def _wake(self, woken: bool) -> None:
        if self._waiter is not None:
            _settle(self._waiter, woken)


def _settle(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


class Relay(Outbox):
    """A call's outbox on a connection with one stream for everything (legacy HTTP+SSE): each
    message goes straight to that stream, and the call's end does not end the stream."""

    __slots__ = ("target",)

    def __init__(self, target: Outbox):
        super().__init__()
        self.target = target

    def put(self, msg: Message) -> bool:
        return not self.closed and self.target.put(msg)

    def finish(self, msg: Message | None = None) -> None:
        if not self.closed and msg is not None:
            self.target.push(msg)
        self.closed = True
