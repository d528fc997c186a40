"""The coalescing transport: a response's header block and body leave in one write, a lone write
still leaves in the same loop turn, and nothing is lost or reordered on close. (Every other test
serves through it too: conftest runs uvicorn with `CoalescingHttpProtocol`, as `mcpmesh up` does.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mcpmesh.front.http_protocol import CoalescingTransport

pytestmark = pytest.mark.anyio


class Recording(asyncio.Transport):
    """A transport that records what reaches the socket, one entry per system call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bytes, ...]] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.calls.append((bytes(data),))

    def writelines(self, chunks: Any) -> None:
        self.calls.append(tuple(bytes(c) for c in chunks))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_two_writes_in_one_turn_leave_together() -> None:
    inner = Recording()
    t = CoalescingTransport(inner, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    t.write(b"{}")
    assert inner.calls == [(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"{}")]
    await asyncio.sleep(0)
    assert len(inner.calls) == 1  # the end of the turn finds nothing held


async def test_a_lone_write_leaves_at_the_end_of_the_turn() -> None:
    inner = Recording()
    t = CoalescingTransport(inner, asyncio.get_running_loop())
    t.write(b"event: message\n\n")
    assert inner.calls == []
    await asyncio.sleep(0)
    assert inner.calls == [(b"event: message\n\n",)]
    t.write(b"a")
    t.write(b"b")
    t.write(b"c")  # held again after the pair left
    await asyncio.sleep(0)
    assert inner.calls[1:] == [(b"a", b"b"), (b"c",)]


async def test_close_sends_what_is_held_first() -> None:
    inner = Recording()
    t = CoalescingTransport(inner, asyncio.get_running_loop())
    t.write(bytearray(b"last words"))
    t.close()
    assert inner.calls == [(b"last words",)] and inner.closed
    await asyncio.sleep(0)
    assert len(inner.calls) == 1
