"""A remote server over Streamable HTTP, in both eras: a 2026-07-28 server gets one stateless POST
per request with its Mcp-* headers; a handshake-era server's session id and protocol version, from
the initialize exchange, go with every POST after it, its GET stream carries what it sends outside
requests, and its session is DELETEd on stop
(https://modelcontextprotocol.io/specification/2025-11-25/basic/transports, Streamable HTTP)."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import anyio
import httpx

from mcpmesh.backend.remote import RemoteConnection, describe, safe_url
from mcpmesh.jsonrpc import Message, is_request, meta_of, params_of
from mcpmesh.protocol.envelope import META_PROTOCOL_VERSION
from mcpmesh.protocol.requests import (
    NAME_BEARING,
    ParamHeaders,
    encode_header_value,
    header_safe,
    mirrored_params,
    param_headers,
)

DELETE_TIMEOUT = 2.0  # ending the upstream session on stop is a courtesy, never a long wait
LISTEN_REOPEN_DELAY = 1.0  # a GET stream that ended is reopened after this; the reopen tells if the server is gone

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
POST_ACCEPT = "application/json, text/event-stream"
_SESSION_ID = re.compile(r"^[\x21-\x7E]+$")  # what a session id may hold (2025-11-25 transports, Session Management)


class StreamableHttpConnection(RemoteConnection):
    """Streamable HTTP: the POST of a request carries its answer (JSON, or an SSE stream)."""

    def __init__(self, name: str, url: str, headers: dict[str, str], max_message_bytes: int):
        super().__init__(name, url, headers, max_message_bytes)
        self._tool_params: dict[str, ParamHeaders] = {}  # x-mcp-header annotations seen in tools/list
        # The handshake era: what the initialize exchange established.
        self._session_id: str | None = None
        self._version: str | None = None
        self._listening = False

    async def _open(self, ready: anyio.Event) -> None:
        """Any HTTP answer will do: this only turns an unreachable server into a clear error
        at once (OPTIONS opens no stream and changes nothing)."""
        try:
            async with self._http.stream("OPTIONS", self.url):
                pass
        except httpx.TransportError as exc:
            self._lose(f"cannot reach {safe_url(self.url)}: {describe(exc)}")
        ready.set()

    def _unsendable(self, msg: Message) -> str | None:
        if self._version is None and not is_request(msg):
            # No handshake-era session: a 2026-07-28 server takes requests only (cancellation is
            # the closing of a request's stream).
            return "notification_without_session"
        return None

    def _closing_cancels(self) -> bool:
        return self._version is None

    def _post_headers(self, msg: Message, modern: bool) -> dict[str, str]:
        headers = {**self._headers, "Accept": POST_ACCEPT, "Content-Type": "application/json"}
        if not modern:
            return self._session_headers(headers)
        method = msg["method"]
        headers[VERSION_HEADER] = meta_of(msg)[META_PROTOCOL_VERSION]
        headers["Mcp-Method"] = encode_header_value(method)
        params = params_of(msg)
        name = params.get(NAME_BEARING.get(method, ""))
        if isinstance(name, str):
            headers["Mcp-Name"] = encode_header_value(name)
        if method == "tools/call" and isinstance(name, str):
            headers.update(mirrored_params(params.get("arguments"), self._tool_params.get(name)))
        return headers

    def _session_headers(self, headers: dict[str, str]) -> dict[str, str]:
        """Configured headers, plus what the handshake-era session established."""
        headers = {**self._headers, **headers}
        if self._session_id is not None:
            headers[SESSION_HEADER] = self._session_id
        if self._version is not None:
            headers[VERSION_HEADER] = self._version
        return headers

    def _replied(self, msg: Message, resp: httpx.Response) -> None:
        method = msg.get("method")
        session_id = resp.headers.get(SESSION_HEADER)
        if method == "initialize" and is_request(msg) and session_id is not None:
            if _SESSION_ID.match(session_id):
                self._session_id = session_id
            else:
                self._event("ignored a session id that is not visible ASCII")
        if method == "notifications/initialized" and self._version is not None and not self._listening:
            self._listening = True
            assert self._tg is not None
            self._tg.start_soon(self._listen)

    def _session_lost(self, msg: Message, status: int) -> bool:
        return status == 404 and self._session_id is not None

    def _learn(self, sent: Message, result: dict[str, Any]) -> None:
        if sent["method"] == "initialize":
            version = result.get("protocolVersion")
            if isinstance(version, str) and header_safe(version):
                self._version = version  # sent as MCP-Protocol-Version from now on
        elif sent["method"] == "tools/list" and isinstance(result.get("tools"), list):
            for tool in result["tools"]:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    self._tool_params[tool["name"]] = param_headers(tool)

    async def _end_session(self) -> None:
        if self._session_id is not None:
            with anyio.move_on_after(DELETE_TIMEOUT), contextlib.suppress(httpx.HTTPError):
                await self._http.delete(self.url, headers=self._session_headers({}))

    async def _listen(self) -> None:
        """The GET stream of a handshake-era session: what the server sends outside requests."""
        while True:
            try:
                headers = self._session_headers({"Accept": "text/event-stream"})
                async with self._http.stream("GET", self.url, headers=headers) as resp:
                    if resp.status_code == 405:
                        return  # the server offers no such stream
                    if resp.status_code == 404 and self._session_id is not None:
                        self._lose("the server ended the session (HTTP 404 to GET)")
                        return
                    if resp.status_code != 200:
                        self._event(f"no GET stream (HTTP {resp.status_code})")
                        return
                    await self._stream_messages(resp)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                self._lose(f"{safe_url(self.url)}: {describe(exc)}")
                return
            except httpx.RequestError as exc:
                self._event(f"GET stream broke ({describe(exc)}); reopening")
            else:
                self._event("GET stream ended by the server; reopening")
            await anyio.sleep(LISTEN_REOPEN_DELAY)
