"""The lean load generator: raw HTTP/1.1 over asyncio sockets (uvloop), one keep-alive connection
per session, no MCP library in the loop; and the same workers over one stdio pipe for the direct
baseline. Run as a child process (`python -m bench.loadgen SPEC_JSON`) so that its own CPU time is
measured apart from the harness; it prints one JSON line with the result.

Modes:
  throughput  N sessions, each a worker doing sequential tools/call echo; warm-up, then a timed window
  idle        open N sessions (initialize + notifications/initialized) over a small pool of
              connections that are then closed, print READY, hold until stdin closes, then DELETE
  ceiling     a null HTTP server in this process answering canned JSON, driven by N workers: what the
              generator can do when the server costs nothing
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

ACCEPT = b"application/json, text/event-stream"
CLIENT_VERSION = "2025-06-18"  # every contender speaks it; mcpmesh answers 2025-06-18 sessions
INIT_PARAMS = {
    "protocolVersion": CLIENT_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "mcpmesh-bench", "version": "1"},
}


class HttpError(Exception):
    pass


class Conn:
    """One keep-alive HTTP/1.1 connection; requests are sequential on it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.hostport = f"{host}:{port}".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self, method: bytes, path: bytes, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        reused = self.writer is not None
        if self.reader is not None and self.reader.at_eof():  # the server closed it while idle
            self.close()
            reused = False
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = [
            method + b" " + path + b" HTTP/1.1",
            b"Host: " + self.hostport,
            b"Accept: " + ACCEPT,
            b"Content-Type: application/json",
            b"Content-Length: " + str(len(body)).encode(),
        ]
        for k, v in headers or ():
            head.append(k + b": " + v)
        data = b"\r\n".join(head) + b"\r\n\r\n" + body
        try:
            self.writer.write(data)
            return await self._response()
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            # an idle keep-alive connection the server closed (uvicorn: after 5 s) fails before any
            # byte of a response: open a new one and send again, once, as HTTP clients do
            partial = getattr(exc, "partial", b"")
            self.close()
            if not reused or partial:
                raise
            await self.open()
            assert self.writer is not None
            self.writer.write(data)
            return await self._response()

    async def _response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        reader = self.reader
        assert reader is not None
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        hdrs: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(b":")
                hdrs[k.strip().lower()] = v.strip()
        if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append((await reader.readexactly(size + 2))[:-2])
            body = b"".join(parts)
        elif b"content-length" in hdrs:
            body = await reader.readexactly(int(hdrs[b"content-length"]))
        elif status in (202, 204, 304) or status < 200:
            body = b""
        else:  # no framing: the body runs to the end of the connection
            body = await reader.read()
            self.close()
        if hdrs.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, hdrs, body


def rpc_from(hdrs: dict[bytes, bytes], body: bytes) -> Any:
    """The JSON-RPC response in a JSON or SSE body (the last data event that is a response)."""
    if hdrs.get(b"content-type", b"").startswith(b"text/event-stream"):
        found = None
        for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
            data = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
            if data:
                msg = orjson.loads(data)
                if isinstance(msg, dict) and ("result" in msg or "error" in msg):
                    found = msg
        if found is None:
            raise HttpError("SSE body without a response")
        return found
    return orjson.loads(body)


class Session:
    """An MCP session over one connection: initialize, initialized, then calls."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.path = parts.path.encode()
        self.conn = Conn(parts.hostname or "127.0.0.1", parts.port or 80)
        self.sid: bytes | None = None
        self.proto = CLIENT_VERSION.encode()
        self.next_id = 0
        self.initialized = False

    def _headers(self) -> list[tuple[bytes, bytes]]:
        h = [(b"MCP-Protocol-Version", self.proto)]
        if self.sid:
            h.append((b"Mcp-Session-Id", self.sid))
        return h

    async def initialize(self) -> None:
        body = orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS})
        status, hdrs, data = await self.conn.request(b"POST", self.path, body, [])
        if status != 200:
            raise HttpError(f"initialize: HTTP {status}: {data[:200]!r}")
        reply = rpc_from(hdrs, data)
        if "error" in reply:
            raise HttpError(f"initialize: {reply['error']}")
        self.sid = hdrs.get(b"mcp-session-id")
        self.proto = str(reply["result"].get("protocolVersion", CLIENT_VERSION)).encode()
        note = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
        status, _, data = await self.conn.request(b"POST", self.path, note, self._headers())
        if status not in (200, 202, 204):
            raise HttpError(f"initialized: HTTP {status}: {data[:200]!r}")
        self.initialized = True

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        body = orjson.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        status, hdrs, data = await self.conn.request(b"POST", self.path, body, self._headers())
        if status != 200:
            raise HttpError(f"{method}: HTTP {status}: {data[:200]!r}")
        reply = rpc_from(hdrs, data)
        if "error" in reply:
            raise HttpError(f"{method}: {reply['error']}")
        return reply["result"]

    async def delete(self) -> None:
        if self.sid:
            try:
                await self.conn.request(b"DELETE", self.path, b"", self._headers())
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
        self.conn.close()


class StdioPeer:
    """Raw JSON-RPC over one stdio child: many concurrent callers, matched by id (the direct baseline)."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=64 << 20,
        )
        self.reader_task = asyncio.ensure_future(self._read())
        self.init_result = await self.request("initialize", INIT_PARAMS)
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(msg) + b"\n")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = orjson.loads(line)
            fut = self.pending.pop(msg.get("id"), None) if "method" not in msg else None
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def forward(self, method: Any, params: Any) -> dict[str, Any]:
        """The backend's whole reply (result or error) to one request, under a fresh id."""
        self.next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        self._send(msg if params is None else {**msg, "params": params})
        reply: dict[str, Any] = await fut
        return reply

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        reply = await self.forward(method, params)
        if "error" in reply:
            raise HttpError(f"{method}: {reply['error']}")
        return reply["result"]

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 3)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.reader_task.cancel()


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(p / 100 * (len(sorted_vals) - 1))))
    return sorted_vals[k]


async def _timed_workers(
    n: int, call: Callable[[int], Awaitable[Any]], warmup: float, duration: float, max_calls: int
) -> dict[str, Any]:
    """n workers calling back to back; only calls that start and end inside the window count."""
    t0 = time.perf_counter()
    start, end = t0 + warmup, t0 + warmup + duration
    lat: list[float] = []
    errors: list[str] = []
    cpu0: list[float] = []

    async def worker(i: int) -> None:
        while True:
            a = time.perf_counter()
            if a >= end or len(lat) >= max_calls:
                return
            if a >= start and not cpu0:
                cpu0.append(_cpu())
            try:
                await call(i)
            except Exception as exc:  # recorded, and that worker stops: a broken session stays broken
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                return
            b = time.perf_counter()
            if a >= start and b <= end:
                lat.append(b - a)

    await asyncio.gather(*(worker(i) for i in range(n)))
    window = min(time.perf_counter(), end) - start
    cpu = _cpu() - (cpu0[0] if cpu0 else _cpu())
    lat.sort()
    return {
        "sessions": n,
        "calls": len(lat),
        "window_s": window,
        "calls_per_s": len(lat) / window if window > 0 else 0.0,
        "p50_ms": _pct(lat, 50) * 1e3,
        "p99_ms": _pct(lat, 99) * 1e3,
        "errors": len(errors),
        "first_errors": errors[:3],
        "client_cpu_s": cpu,
        "client_cpu_share": cpu / window if window > 0 else 0.0,
    }


async def throughput(spec: dict[str, Any]) -> dict[str, Any]:
    n = spec["sessions"]
    params = {"name": "echo", "arguments": {"message": spec.get("message", "hello")}}
    if spec.get("stdio"):
        peer = StdioPeer(spec["stdio"])
        await peer.start()
        try:
            return await _timed_workers(
                n, lambda i: peer.request("tools/call", params), spec["warmup"], spec["duration"], spec["max_calls"]
            )
        finally:
            await peer.stop()
    sessions = [Session(spec["url"]) for _ in range(n)]
    sem = asyncio.Semaphore(16)

    async def init(s: Session) -> None:
        async with sem:
            await s.initialize()

    t = time.perf_counter()
    await asyncio.gather(*(init(s) for s in sessions))
    opened = time.perf_counter() - t
    try:
        out = await _timed_workers(
            n, lambda i: sessions[i].call("tools/call", params), spec["warmup"], spec["duration"], spec["max_calls"]
        )
    finally:
        await asyncio.gather(*(s.delete() for s in sessions))
    out["open_s"] = opened
    return out


async def idle(spec: dict[str, Any]) -> dict[str, Any]:
    """Open N sessions, then hold them (no connection left open) until told to go."""
    n = spec["sessions"]
    pool = [Conn(*_hostport(spec["url"])) for _ in range(min(16, n))]
    sessions = [Session(spec["url"]) for _ in range(n)]
    errors: list[str] = []
    queue: asyncio.Queue[Session] = asyncio.Queue()
    for s in sessions:
        queue.put_nowait(s)

    async def opener(conn: Conn) -> None:
        while not queue.empty():
            s = queue.get_nowait()
            s.conn = conn  # share the pool's connection
            try:
                await s.initialize()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                conn.close()

    t = time.perf_counter()
    await asyncio.gather(*(opener(c) for c in pool))
    opened = time.perf_counter() - t
    for c in pool:
        c.close()
    ok = sum(1 for s in sessions if s.initialized)
    with_id = sum(1 for s in sessions if s.sid)
    result = {"opened": ok, "with_session_id": with_id, "errors": len(errors), "first_errors": errors[:3]}
    print("READY " + json.dumps({**result, "open_s": opened}))
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    # end them: a pool of connections again
    queue = asyncio.Queue()
    for s in sessions:
        if s.sid:
            queue.put_nowait(s)

    async def closer(conn: Conn) -> None:
        while not queue.empty():
            s = queue.get_nowait()
            s.conn = conn
            try:
                await conn.request(b"DELETE", s.path, b"", s._headers())
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()

    await asyncio.gather(*(closer(Conn(*_hostport(spec["url"]))) for _ in range(min(16, n))))
    return {"opened": ok, "errors": len(errors)}


def _hostport(url: str) -> tuple[str, int]:
    p = urlsplit(url)
    return p.hostname or "127.0.0.1", p.port or 80


async def ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    """The generator against a null server in the same process: an upper bound on what it can drive."""
    canned = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "Echo: hi"}]}})
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(canned),
        canned,
    )
    init = orjson.dumps({"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": CLIENT_VERSION}})
    init_reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: x\r\nContent-Length: %d\r\n\r\n%s"
        % (len(init), init)
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                if b'"initialize"' in body:
                    writer.write(init_reply)
                elif b'"id"' not in body:
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                else:
                    writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await throughput({**spec, "url": f"http://127.0.0.1:{port}/mcp"})


async def serve(spec: dict[str, Any]) -> dict[str, Any]:
    """A null MCP server over HTTP (no backend, no sessions kept): answers initialize, tools/list and
    tools/call echo itself, with JSON bodies. Its latency is the floor any HTTP gateway could reach
    with the same client; it runs until killed.

    With `"backend": argv` it is the thin forwarder instead: the least a gateway in Python can do.
    It starts the backend once and initializes it, answers each client's initialize with the
    backend's own result, and forwards every other request over that one stdio pipe (ids
    rewritten by `StdioPeer`): one JSON parse and one dump each way, no sessions, no checks, no
    timeouts, nothing logged or counted."""
    peer: StdioPeer | None = None
    if spec.get("backend"):
        peer = StdioPeer(spec["backend"])
        await peer.start()

    async def answer(msg: dict[str, Any]) -> bytes:
        method, rid = msg.get("method"), msg.get("id")
        if peer is not None and method != "initialize":
            reply = await peer.forward(method, msg.get("params"))
            return orjson.dumps({**reply, "id": rid})
        if method == "initialize":
            res: dict[str, Any] = (
                peer.init_result
                if peer is not None
                else {
                    "protocolVersion": msg["params"].get("protocolVersion", CLIENT_VERSION),
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "null", "version": "1"},
                }
            )
        elif method == "tools/list":
            schema = {"type": "object", "properties": {"message": {"type": "string"}}}
            res = {"tools": [{"name": "echo", "inputSchema": schema}]}
        elif method == "tools/call":
            res = {"content": [{"type": "text", "text": "Echo: " + msg["params"]["arguments"]["message"]}]}
        else:
            res = {}
        return orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": res})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                if head.startswith(b"GET "):  # no standalone stream offered (as the spec allows)
                    writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nAllow: POST, DELETE\r\nContent-Length: 0\r\n\r\n")
                    continue
                if head.startswith(b"DELETE "):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    continue
                msg = orjson.loads(body) if body else {}
                if not isinstance(msg, dict) or "id" not in msg:
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                    continue
                out = await answer(msg)
                extra = b"Mcp-Session-Id: null\r\n" if msg.get("method") == "initialize" else b""
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
                    % (extra, len(out), out)
                )
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", spec["port"], limit=64 << 20)
    async with server:
        await server.serve_forever()
    return {}


def main() -> None:
    spec = json.loads(sys.argv[1])
    fn = {"throughput": throughput, "idle": idle, "ceiling": ceiling, "serve": serve}[spec["mode"]]
    try:
        import uvloop

        out = uvloop.run(fn(spec))
    except ImportError:
        out = asyncio.run(fn(spec))
    out["pid"] = os.getpid()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
