"""The audit trail of tool calls: one `tool_call` event per call (client, server, tool, outcome,
duration), written to the registry's event log in batches so the hot path never waits on SQLite;
also where the event log's retention is enforced while the mesh runs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from mcpmesh.registry.base import NewEvent, Registry
from mcpmesh.router.session import Call

FLUSH_INTERVAL = 0.5  # seconds an event may wait in memory before it is written
FLUSH_AT = 500  # events buffered before a write happens at once (bursts)
TRIM_INTERVAL = 60.0  # seconds between retention trims when no tool call was written (other events)
MAX_TOOL_NAME = 200  # a tool name is the client's text: kept to a sane length


class ToolCallAudit:
    """A CallObserver recording every tools/call as it ends."""

    def __init__(self, registry: Registry, retention: int):
        self.registry = registry
        self.retention = retention
        self._buffer: list[NewEvent] = []

    def call_started(self, server: str, call: Call) -> None:
        return None

    def call_done(self, server: str, call: Call, outcome: str) -> None:
        if call.method != "tools/call":
            return
        detail = {
            "client": call.session.client,
            "session": call.session.id[:8],
            "tool": call.name[:MAX_TOOL_NAME] if isinstance(call.name, str) else None,
            "outcome": outcome,
            "duration_ms": round((time.monotonic() - call.started) * 1000, 3),
        }
        self._buffer.append(("tool_call", server, time.time(), detail))
        if len(self._buffer) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        batch, self._buffer = self._buffer, []
        if batch:
            self.registry.append_many(batch)
            # Trimmed with each batch: a few hundred rows at a time, where a trim a minute under
            # load deleted ~600,000 and stalled the event loop for most of a second.
            self.registry.trim_events(self.retention)

    @asynccontextmanager
    async def run(self) -> AsyncIterator[ToolCallAudit]:
        """Flush every FLUSH_INTERVAL and trim the log every TRIM_INTERVAL; flush on exit."""

        async def flusher() -> None:
            last_trim = time.monotonic()
            while True:
                await anyio.sleep(FLUSH_INTERVAL)
                self.flush()
                if time.monotonic() - last_trim >= TRIM_INTERVAL:
                    self.registry.trim_events(self.retention)
                    last_trim = time.monotonic()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(flusher)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self.flush()
