"""The HTTP/1.1 protocol uvicorn runs for the mesh: its httptools protocol, with each response's
header block and first body chunk sent in one `write`.

uvicorn writes the header block as soon as the app sends `http.response.start`, then the body in a
second `write`: two syscalls on a loopback TCP socket per answer, where each runs the receiver's
side of the TCP stack too (`write` was 17% of the gateway's samples at 32 sessions for answers
alone, bench/README.md). Holding a write until the next one, or until the end of this turn of the
event loop, joins them without delaying anything: an SSE stream's headers still go out at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _JoinedWrites:
    """A transport whose `write` holds data until the next write (both then go out in one `writev`)
    or until the end of the loop's turn, whichever comes first."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.writelines((held, data))  # one writev, nothing copied

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


class MeshHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through `_JoinedWrites` (pass as `uvicorn.Config(http=...)`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn's own signature
        super().connection_made(transport)
        self.transport = _JoinedWrites(transport, self.loop)  # type: ignore[assignment]  # same interface, as used here
