"""`Outbox` on its own: waiting for a client stream's next message, with and without a time limit."""

from __future__ import annotations

import anyio
import pytest

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
