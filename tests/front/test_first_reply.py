"""`FirstReplyWait` on its own: a POST's wait for its call's first message gives up after its own
interval, with one timer for every wait."""

from __future__ import annotations

import anyio
import pytest

from mcpmesh.front.first_reply import FirstReplyWait
from mcpmesh.router.outbox import Outbox

pytestmark = pytest.mark.anyio


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
