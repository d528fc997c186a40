"""Reading HTTP response bodies from remote servers with bounded memory: SSE events and whole bodies."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import httpx


async def sse_messages(
    response: httpx.Response, cap: int, on_oversize: Callable[[str], None]
) -> AsyncGenerator[tuple[str, bytes], None]:
    """(event type, data) for each complete event of an SSE body. Memory is bounded: an event
    whose data exceeds `cap` bytes is skipped and reported; comments, ids and retry are ignored,
    and so are events without data (priming events)."""
    pending = bytearray()
    discarding = False  # inside a line already known to be over the cap
    event, data, size, skip = "message", list[bytes](), 0, False
    async for chunk in response.aiter_bytes():
        start = 0
        while (newline := chunk.find(b"\n", start)) != -1:
            line: bytes | None = None
            if discarding:
                discarding, skip = False, True
            else:
                pending += chunk[start:newline]
                line = bytes(pending).removesuffix(b"\r")
            pending.clear()
            start = newline + 1
            if line is None or line.startswith(b":"):
                continue
            if not line:  # end of event
                joined = b"\n".join(data)
                if joined and not skip:
                    yield event, joined
                event, data, size, skip = "message", [], 0, False
                continue
            field, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if field == b"data" and not skip:
                size += len(value) + 1
                if size > cap:
                    on_oversize("oversize")
                    skip, data = True, []
                else:
                    data.append(value)
            elif field == b"event":
                event = value.decode("utf-8", "replace")
        if not discarding:
            pending += chunk[start:]
            if len(pending) > cap:
                if not skip:
                    on_oversize("oversize")
                pending.clear()
                discarding = True


async def read_capped(response: httpx.Response, cap: int) -> bytes | None:
    """The whole body, or None once it exceeds `cap` bytes."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            return None
    return bytes(body)
