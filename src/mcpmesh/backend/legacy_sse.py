"""A remote server over the 2024-11-05 HTTP+SSE transport: one GET stream carries everything the
server sends; its first `endpoint` event says where messages are POSTed, which must be the stream's
own origin, since the configured headers go there
(https://modelcontextprotocol.io/specification/2024-11-05/basic/transports, HTTP with SSE)."""

from __future__ import annotations

import contextlib
from typing import ClassVar

import anyio
import httpx

from mcpmesh.backend.remote import RemoteConnection, describe, safe_url
from mcpmesh.backend.response_reader import sse_messages
from mcpmesh.jsonrpc import Message


class LegacySseConnection(RemoteConnection):
    """HTTP+SSE: POSTs are only accepted (202); every answer comes on the stream."""

    NOT_READY: ClassVar[str] = "sent no endpoint event"
    ANSWERS_ON_POST: ClassVar[bool] = False

    def __init__(self, name: str, url: str, headers: dict[str, str], max_message_bytes: int):
        super().__init__(name, url, headers, max_message_bytes)
        self._endpoint: str | None = None  # where messages are POSTed, from the stream's `endpoint` event

    async def _open(self, ready: anyio.Event) -> None:
        """The one GET stream; its `endpoint` event makes the connection ready."""
        headers = {**self._headers, "Accept": "text/event-stream"}
        try:
            async with self._http.stream("GET", self.url, headers=headers) as resp:
                if resp.status_code != 200:
                    hint = " (check the configured headers)" if resp.status_code in (401, 403) else ""
                    self._lose(f"{safe_url(self.url)} answered HTTP {resp.status_code}{hint}")
                    return
                async with contextlib.aclosing(sse_messages(resp, self.max_message_bytes, self._drop)) as events:
                    async for event, data in events:
                        if event == "endpoint" and self._endpoint is None:
                            self._endpoint = self._endpoint_url(data)
                            if self._endpoint is None:
                                self._lose("the endpoint event names another origin")
                                return
                            ready.set()
                        elif event == "message":
                            await self._deliver(data)
            self._lose("the server closed the SSE stream")
        except httpx.RequestError as exc:
            where = safe_url(self.url) if self._endpoint else f"cannot reach {safe_url(self.url)}"
            self._lose(f"{where}: {describe(exc)}")

    def _refusal(self, msg: Message, modern: bool) -> str | None:
        if modern:
            return "Method not found: 2026-07-28 requests cannot travel over the 2024-11-05 HTTP+SSE transport"
        return None

    def _post_url(self) -> str:
        assert self._endpoint is not None  # the connection is ready only once it is known
        return self._endpoint

    def _post_headers(self, msg: Message, modern: bool) -> dict[str, str]:
        return {**self._headers, "Content-Type": "application/json"}

    def _endpoint_url(self, data: bytes) -> str | None:
        """The POST URL, only on the stream's own origin (the configured headers go there)."""
        base = httpx.URL(self.url)
        try:
            target = base.join(data.decode("utf-8", "replace").strip())
        except httpx.InvalidURL:
            return None
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            return None
        return str(target)
