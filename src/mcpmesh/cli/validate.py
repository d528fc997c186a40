"""`mcpmesh validate`: prove from outside, as a client would, that what the registry claims answers.

For every server the mesh lists and every URL it advertises (main port and dedicated port, MCP and
legacy SSE): connect with the official MCP SDK client, handshake, list every tool and compare the
names with the registry's, and ping; on the MCP URLs, do the same in the 2026-07-28 era (discover,
tools/list). Every port the pool says is held must be listening and be served by this same mesh.
One line per check; any failure, a stopped server's included unless allowed, makes the exit code 1.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from mcp import Client, ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import Implementation, ListToolsResult, PaginatedRequestParams
from rich.console import Console
from rich.markup import escape

from mcpmesh import __version__
from mcpmesh.errors import ValidationGap

CHECK_TIMEOUT = 15.0  # one check (connect, handshake, every tools/list page, ping) may take this long
MAX_TOOL_PAGES = 100
SESSION_CATALOG_WAIT = 5.0
MODERN = "2026-07-28"
ME = Implementation(name="mcpmesh-validate", version=__version__)


@dataclass
class Check:
    server: str  # "-" for checks of the mesh itself
    check: str
    target: str
    ok: bool
    detail: str


class Validator:
    def __init__(self, base_url: str, allow_stopped: bool = False):
        self.base_url = base_url
        self.allow_stopped = allow_stopped  # an operator's stop is what they asked for, not a gap
        self.checks: list[Check] = []

    def add(self, server: str, check: str, target: str, ok: bool, detail: str) -> Check:
        result = Check(server, check, target, ok, detail)
        self.checks.append(result)
        return result

    async def run(self) -> list[Check]:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT) as http:
            try:
                mesh = (await http.get(f"{self.base_url}/healthz")).raise_for_status().json()
                servers = (await http.get(f"{self.base_url}/v1/servers")).raise_for_status().json()["servers"]
                ports = (await http.get(f"{self.base_url}/v1/ports")).raise_for_status().json()["ports"]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                self.add("-", "mesh", self.base_url, False, f"cannot read the registry: {exc}")
                return self.checks
            self.add("-", "mesh", self.base_url, True, f"mesh {mesh.get('mesh', '?')} answers")
            for server in servers:
                await self._server(http, server)
            await self._ports(http, mesh.get("mesh"), servers, ports)
        return self.checks

    # -- one server ----------------------------------------------------------------------------
    async def _server(self, http: httpx.AsyncClient, server: dict[str, Any]) -> None:
        name, state = server["name"], server["state"]
        if not server.get("enabled", True):
            self.add(name, "state", "registry", True, f"{state} ({server['reason']}): switched off, serves nothing")
            return
        if state == "stopped":
            allowed = "allowed by --allow-stopped" if self.allow_stopped else "--allow-stopped accepts it"
            detail = f"stopped ({server['reason']}): serves nothing; {allowed}"
            self.add(name, "state", "registry", self.allow_stopped, detail)
            return
        self.add(name, "state", "registry", state == "healthy", f"{state} ({server['reason']})")

        # A session-mode server's lists are read from the first process a session initializes:
        # this check's own session may be the first, so give the registry a moment to learn them.
        patience = SESSION_CATALOG_WAIT if server["sharing"] == "session" else 0.0
        registered = functools.partial(self._registered_tools, http, name, patience)
        for kind, url in server["urls"].items():
            connect = _sse_session if kind.endswith("sse") else _http_session
            await self._check_url(name, url, registered, connect)
            if not kind.endswith("sse"):  # legacy SSE has no 2026-07-28 form
                await self._check_modern(name, url, registered)

    async def _registered_tools(self, http: httpx.AsyncClient, name: str, patience: float) -> list[str] | None:
        """The tool names the registry lists for the server, waiting up to `patience` for a first list."""
        names = await self._registry_tools(http, name)
        with anyio.move_on_after(patience):
            while names is None:
                await anyio.sleep(0.1)
                names = await self._registry_tools(http, name)
        return names

    async def _registry_tools(self, http: httpx.AsyncClient, name: str) -> list[str] | None:
        listing = (await http.get(f"{self.base_url}/v1/servers/{name}")).json().get("catalog", {}).get("tools")
        return list(listing["names"]) if listing is not None else None

    async def _check_url(
        self, name: str, url: str, claimed: Callable[[], Awaitable[list[str] | None]], connect: Callable[[str], Any]
    ) -> None:
        """Handshake, tools against the registry, ping: one line each; the first failure ends the URL's checks."""
        step = "handshake"
        try:
            with anyio.fail_after(CHECK_TIMEOUT):
                async with connect(url) as session:
                    init = await session.initialize()
                    info = f"{init.server_info.name} {init.server_info.version}, protocol {init.protocol_version}"
                    self.add(name, step, url, True, info)
                    step = "tools"
                    self.add(name, step, url, True, await self._compare_tools(_pages(session), claimed))
                    step = "ping"
                    await session.send_ping()
                    self.add(name, step, url, True, "answered")
                    step = "disconnect"
        except Exception as exc:  # whatever went wrong is what this check reports
            self.add(name, step, url, False, _describe(exc))

    async def _check_modern(self, name: str, url: str, claimed: Callable[[], Awaitable[list[str] | None]]) -> None:
        """The same URL as a 2026-07-28 client sees it (what `mcp.Client` speaks by default):
        server/discover answered in 2026-07-28, then every tools/list page against the registry."""
        step = "discover"
        try:
            with anyio.fail_after(CHECK_TIMEOUT):
                # "auto" sends server/discover (a pinned mode would assume its answer) and falls
                # back to the handshake when it is refused: a mesh that answers one era only.
                async with Client(url, mode="auto", client_info=ME) as client:
                    if client.protocol_version != MODERN:
                        raise ValidationGap(
                            f"server/discover not answered: a client falls back to {client.protocol_version}"
                        )
                    server = client.server_info
                    who = f"{server.name} {server.version}" if server else "no serverInfo"
                    info = f"{who}, protocol {client.protocol_version}"
                    self.add(name, step, url, True, info)
                    step = "tools (2026-07-28)"
                    self.add(name, step, url, True, await self._compare_tools(_modern_pages(client), claimed))
        except Exception as exc:  # whatever went wrong is what this check reports
            self.add(name, step, url, False, _describe(exc))

    async def _compare_tools(
        self,
        page_at: Callable[[str | None], Awaitable[ListToolsResult]],
        registered: Callable[[], Awaitable[list[str] | None]],
    ) -> str:
        served: list[str] = []
        cursor = None
        for _ in range(MAX_TOOL_PAGES):
            page = await page_at(cursor)
            served += [tool.name for tool in page.tools]
            if not (cursor := page.next_cursor):
                break
        claimed = await registered()
        if claimed is None:
            raise ValidationGap(f"serves {len(served)} tools, but the registry lists none")
        missing, extra = sorted(set(claimed) - set(served)), sorted(set(served) - set(claimed))
        if missing or extra:
            raise ValidationGap(f"tools differ from the registry: not served {missing}, not registered {extra}")
        return f"{len(served)} tools, as the registry lists"

    # -- the port pool -------------------------------------------------------------------------
    async def _ports(
        self, http: httpx.AsyncClient, instance: str | None, servers: list[dict[str, Any]], ports: list[dict[str, Any]]
    ) -> None:
        advertised = {s["name"]: s["urls"].get("dedicated_mcp") for s in servers}
        for lease in ports:
            if lease["state"] != "held":
                continue
            holder, port = lease["holder"], lease["port"]
            url = advertised.get(holder)
            if url is None or urlsplit(url).port != port:
                why = "is not a configured server" if holder not in advertised else f"advertises {url}"
                self.add(holder, "port", str(port), False, f"the pool holds port {port} for {holder!r}, which {why}")
                continue
            base = url.rsplit("/", 1)[0]
            try:
                answer = (await http.get(f"{base}/healthz")).raise_for_status().json()
            except (httpx.HTTPError, ValueError) as exc:
                self.add(holder, "port", base, False, f"nothing serves pool port {port}: {_describe(exc)}")
                continue
            same = answer.get("mesh") == instance and answer.get("server") == holder
            who = f"mesh {answer.get('mesh')!r}, server {answer.get('server')!r}"
            self.add(holder, "port", base, same, f"port {port} served by {who}")


def _pages(session: ClientSession) -> Callable[[str | None], Awaitable[ListToolsResult]]:
    return lambda cursor: session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)


def _modern_pages(client: Client) -> Callable[[str | None], Awaitable[ListToolsResult]]:
    return lambda cursor: client.list_tools(cursor=cursor, cache_mode="bypass")  # what answers now


@asynccontextmanager
async def _http_session(url: str) -> AsyncIterator[ClientSession]:
    async with streamable_http_client(url) as (read, write), ClientSession(read, write, client_info=ME) as session:
        yield session


@asynccontextmanager
async def _sse_session(url: str) -> AsyncIterator[ClientSession]:
    async with sse_client(url, timeout=CHECK_TIMEOUT) as (read, write):
        async with ClientSession(read, write, client_info=ME) as session:
            yield session


def _describe(exc: BaseException) -> str:
    """The innermost useful message of an exception (task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT:g}s"
    if isinstance(exc, ValidationGap):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def validate(base_url: str, as_json: bool, console: Console, allow_stopped: bool = False) -> int:
    """0 when every check passed, 1 otherwise."""
    checks = anyio.run(Validator(base_url, allow_stopped).run)
    failed = [c for c in checks if not c.ok]
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            mark = "[green]ok  [/green]" if c.ok else "[bold red]FAIL[/bold red]"
            console.print(f"{mark} {escape(c.server)} {c.check} {escape(c.target)}: {escape(c.detail)}", soft_wrap=True)
        console.print(f"{len(checks)} checks, {len(failed)} failed")
    return 1 if failed else 0
