"""`Outbox` on its own: waiting for a client stream's next message, with and without a time limit."""

from __future__ import annotations

import anyio
import pytest

from mcpmesh.front.first_reply import FirstReplyWait
from mcpmesh.router.outbox import Outbox

pytestmark = pytest.mark.anyio


async def test_a_wait_that_times_out_loses_nothing_that_comes_later() -> None:
    outbox = Outbox()
    with pytest.raises(TimeoutError):
        await outbox.get(timeout=0.01)
    outbox.put({"jsonrpc": "2.0", "method": "notifications/progress"})
    outbox.finish({"jsonrpc": "2.0", "id": 1, "result": {}})
    with anyio.fail_after(5):
        assert await outbox.get(timeout=0.01) == {"jsonrpc": "2.0", "method": "notifications/progress"}
        assert await outbox.get() == {"jsonrpc": "2.0", "id": 1, "result": {}}
        assert await outbox.get() is None


async def test_a_waiting_get_is_woken_by_the_message_not_the_timer() -> None:
    outbox = Outbox()
    got = []

    async def wait() -> None:
        got.append(await outbox.get(timeout=30))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.01)
            outbox.push({"jsonrpc": "2.0", "id": 2, "result": {}})
    assert got == [{"jsonrpc": "2.0", "id": 2, "result": {}}]


async def test_a_cancelled_wait_leaves_the_outbox_usable() -> None:
    outbox = Outbox()
    with anyio.move_on_after(0.01):
        await outbox.get()
    outbox.finish()
    with anyio.fail_after(5):
        assert await outbox.get() is None


async def test_first_reply_waits_give_up_after_their_own_interval_with_one_timer() -> None:
    """A wait answered in time gets its message; one that lasts the interval gets TimeoutError; a
    wait that began later is not cut short when an older one gives up (margins of 0.7 s or more)."""
    waits = FirstReplyWait(interval=2.0)
    answered, old, young = Outbox(), Outbox(), Outbox()
    outcomes: dict[str, object] = {}

    async def wait(name: str, outbox: Outbox) -> None:
        try:
            outcomes[name] = await waits.first(outbox)
        except TimeoutError:
            outcomes[name] = "gave up"

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, "answered", answered)
        tg.start_soon(wait, "old", old)
        await anyio.sleep(0.1)
        answered.push({"jsonrpc": "2.0", "id": 1, "result": {}})
        await anyio.sleep(0.9)
        tg.start_soon(wait, "young", young)  # begins 1.0 s after "old"
        await anyio.sleep(1.3)  # 2.3 s: "old" gave up at 2.0; "young" has 0.7 s left
        assert outcomes == {"answered": {"jsonrpc": "2.0", "id": 1, "result": {}}, "old": "gave up"}
        young.push({"jsonrpc": "2.0", "id": 2, "result": {}})
    assert outcomes["young"] == {"jsonrpc": "2.0", "id": 2, "result": {}}
    old.push({"jsonrpc": "2.0", "id": 3, "result": {}})  # what came after giving up stays queued
    assert await old.get() == {"jsonrpc": "2.0", "id": 3, "result": {}}
