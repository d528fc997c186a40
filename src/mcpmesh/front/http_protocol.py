"""uvicorn's httptools protocol, with each response's header block and body leaving in one write.

uvicorn writes the status line and headers as soon as the app starts its response, then the body
in a second write. On loopback each write that reaches an idle client wakes it: the client reads
the headers alone, sleeps again, and is woken a second time for the body. That second wake-up was
the largest single cost of a small call (see bench/README.md). Here the transport holds what is
written until the end of the current event-loop turn, or until the next write joins it, and sends
both in one `writev`. A stream's first event still leaves in the turn it was written in.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport that sends a write together with the one after it (or at the end of the loop turn)."""

    __slots__ = ("_inner", "_held", "_loop")

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._inner = inner
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._inner.writelines((held, data))

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._inner.is_closing():
            self._inner.write(held)

    def writelines(self, chunks: Any) -> None:
        self.flush()
        self._inner.writelines(chunks)

    def write_eof(self) -> None:
        self.flush()
        self._inner.write_eof()

    def close(self) -> None:
        self.flush()
        self._inner.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._inner, name)


class CoalescingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescingTransport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]


# How every listener of the mesh is served (`uvicorn.Config(app, **SERVE_WITH, ...)`): MCP has no
# WebSocket transport, so no WebSocket protocol either (uvicorn's "auto" imports one at start-up).
SERVE_WITH: dict[str, Any] = {"http": CoalescingHttpProtocol, "ws": "none"}
