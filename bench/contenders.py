"""The contenders: how each is started on 127.0.0.1 (where it can be chosen) in front of the same
backend, where its endpoints are, and whether it runs one backend process per client session."""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.install import MCP_PROXY, PEERS, SUPERGATEWAY_JS, contextforge_python
from bench.procs import Proc

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING_JS = ROOT / "tools" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
MAX_BODY = 16 * 1024 * 1024  # mcpmesh's default cap is 4 MiB; the 5 MB workload needs more


def node() -> str:
    path = shutil.which("node")
    if path is None:
        sys.exit("node is not on PATH (Node >= 20 is needed for server-everything)")
    return path


def backend_argv() -> list[str]:
    return [node(), str(EVERYTHING_JS), "stdio"]


def server_names(n: int) -> list[str]:
    return ["everything"] if n == 1 else [f"e{i:02d}" for i in range(1, n + 1)]


@dataclass
class Running:
    """A started contender: its processes and one MCP URL per backend server."""

    contender: str
    procs: list[Proc]
    urls: list[str]
    health_url: str | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    killed: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.urls[0]

    def pids(self) -> list[int]:
        out: list[int] = []
        for p in self.procs:
            out += procs.tree(p.pid)
        return out

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            self.killed += p.stop()
        if self.tmp is not None:
            self.tmp.cleanup()


class Contender:
    name = ""
    label = ""
    per_session_process = False  # one backend process per client session
    peer = True  # a peer gateway (not direct stdio, not mcpmesh)
    no_sessions = False  # keeps no session state (nothing to measure per session)
    note = ""

    def available(self) -> str | None:
        """None when it can run; otherwise why not."""
        return None

    def start(self, run_id: str, log_dir: Path, servers: int = 1) -> Running:
        raise NotImplementedError


class Direct(Contender):
    name, label, peer = "direct", "direct stdio", False
    note = "SDK ClientSession over stdio_client (latency); raw JSON-RPC over one pipe (throughput)"

    def start(self, run_id: str, log_dir: Path, servers: int = 1) -> Running:
        return Running(self.name, [], [])


class NullHttp(Contender):
    """No gateway and no backend: a raw HTTP server that answers echo itself. Not a contender to
    beat but the floor: what any HTTP gateway adds at least with the same client on this machine."""

    name, label, peer = "null-http", "null HTTP (floor)", False
    note = "bench/loadgen.py serve: answers initialize, tools/list, echo with JSON; no backend"
    no_sessions = True

    def start(self, run_id: str, log_dir: Path, servers: int = 1) -> Running:
        port = procs.free_port()
        spec = json.dumps({"mode": "serve", "port": port})
        proc = procs.start(
            f"{self.name}-{servers}", [sys.executable, "-m", "bench.loadgen", spec], run_id, log_dir, cwd=ROOT
        )
        return Running(self.name, [proc], [f"http://127.0.0.1:{port}/mcp"])


class ThinForwarder(Contender):
    """The least a gateway written in Python can do: one backend over stdio, requests forwarded with
    their ids rewritten, no sessions, checks, time-outs, logs or metrics. Not a contender to beat
    either, but the floor for any Python gateway on this machine (mcpmesh's own runtime included)."""

    name, label, peer = "thin", "thin forwarder (floor)", False
    note = "bench/loadgen.py serve with a backend: asyncio streams on uvloop, one stdio pipe, ids rewritten"
    no_sessions = True

    def start(self, run_id: str, log_dir: Path, servers: int = 1) -> Running:
        port = procs.free_port()
        spec = json.dumps({"mode": "serve", "port": port, "backend": backend_argv()})
        proc = procs.start(
            f"{self.name}-{servers}", [sys.executable, "-m", "bench.loadgen", spec], run_id, log_dir, cwd=ROOT
        )
        return Running(self.name, [proc], [f"http://127.0.0.1:{port}/mcp"])


class Mcpmesh(Contender):
    peer = False

    def __init__(self, sharing: str, tunings: str = "", baseline: tuple[str, Path] | None = None):
        self.sharing = sharing
        self.tunings = tunings  # bench/variants.py: tunings applied from outside src/, for evidence
        self.baseline = baseline  # (git ref, exported src/ dir): an earlier mcpmesh, for A/B runs
        self.name = f"mcpmesh-{sharing}" + (f"+{tunings}" if tunings else "")
        self.label = f"mcpmesh {sharing}" + (f" +{tunings}" if tunings else "")
        self.per_session_process = sharing == "session"
        if tunings:
            self.note = f"mcpmesh with bench/variants.py tunings: {tunings}"
        if baseline is not None:
            self.name += f"@{baseline[0]}"
            self.label += f" @{baseline[0]}"
            self.note = f"mcpmesh as of git {baseline[0]} (src/ exported to a temp dir)"

    def start(self, run_id: str, log_dir: Path, servers: int = 1) -> Running:
        tmp = tempfile.TemporaryDirectory(prefix="mcpmesh-bench-")
        port = procs.free_port()
        argv = backend_argv()
        lines = [
            "[mesh]",
            'host = "127.0.0.1"',
            f"port = {port}",
            f'state_dir = "{tmp.name}/state"',
            "max_sessions = 5000",
            f"max_body_bytes = {MAX_BODY}",
        ]
        names = server_names(servers)
        for name in names:
            lines += [
                f"[servers.{name}]",
                f'command = "{argv[0]}"',
                f'args = ["{argv[1]}", "stdio"]',
                f'sharing = "{self.sharing}"',
                f'inherit_env = ["{procs.MARKER}"]',  # so the leftover sweep finds the servers too
            ]
        cfg = Path(tmp.name) / "mcpmesh.toml"
        cfg.write_text("\n".join(lines) + "\n")
        mesh = [str(Path(sys.executable).parent / "mcpmesh")]
        if self.tunings:
            mesh = [sys.executable, "-m", "bench.variants", self.tunings]
        elif self.baseline is not None:  # the exported tree comes first on sys.path, before the editable install
            src = str(self.baseline[1])
            # `python -m mcpmesh` from that tree: its entry point, whatever the layout of the ref
            boot = f"import runpy, sys; sys.path.insert(0, {src!r}); runpy.run_module('mcpmesh', run_name='__main__')"
            mesh = [sys.executable, "-c", boot]
        argv = [*mesh, "up", "--config", str(cfg), "--log-level", "warning"]
        proc = procs.start(f"{self.name}-{servers}", argv, run_id, log_dir, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        return Running(self.name, [proc], [f"{base}/servers/{n}/mcp" for n in names], f"{base}/healthz", tmp)


class Supergateway(Contender):
    name, label, per_session_process = "supergateway", "supergateway --stateful", True
    note = "binds 0.0.0.0 (no host flag); one child per session"

    def available(self) -> str | None:
        return None if SUPERGATEWAY_JS.exists() else f"{SUPERGATEWAY_JS} missing"

    def start(self, run_id: str, log_dir: Path, servers: int = 1) -> Running:
        ps, urls = [], []
        for i, _ in enumerate(server_names(servers)):
            port = procs.free_port()
            argv = [
                node(),
                str(SUPERGATEWAY_JS),
                "--stdio",
                " ".join(backend_argv()),
                "--outputTransport",
                "streamableHttp",
                "--stateful",
                "--port",
                str(port),
                "--logLevel",
                "none",
            ]
            ps.append(procs.start(f"{self.name}-{servers}-{i}", argv, run_id, log_dir))
            urls.append(f"http://127.0.0.1:{port}/mcp")
        return Running(self.name, ps, urls)


class McpProxy(Contender):
    name, label = "mcp-proxy", "mcp-proxy 0.13"

    def available(self) -> str | None:
        return None if MCP_PROXY.exists() else f"{MCP_PROXY} missing"

    def start(self, run_id: str, log_dir: Path, servers: int = 1) -> Running:
        port = procs.free_port()
        argv = [str(MCP_PROXY), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
        argv.append("--pass-environment")  # so the leftover sweep finds the servers by marker
        names = server_names(servers)
        if servers == 1:
            argv += ["--", *backend_argv()]
            urls = [f"http://127.0.0.1:{port}/mcp"]
        else:
            for name in names:
                argv += ["--named-server", name, " ".join(backend_argv())]
            urls = [f"http://127.0.0.1:{port}/servers/{n}/mcp" for n in names]
        proc = procs.start(f"{self.name}-{servers}", argv, run_id, log_dir)
        return Running(self.name, [proc], urls)


class ContextForge(Contender):
    name, label = "contextforge", "ContextForge translate"
    note = "python -m mcpgateway.translate, one process per server"

    def available(self) -> str | None:
        py = contextforge_python()
        return None if py.exists() else f"{py} missing"

    def start(self, run_id: str, log_dir: Path, servers: int = 1) -> Running:
        tmp = tempfile.TemporaryDirectory(prefix="contextforge-bench-")
        env = {
            # high-entropy secrets, fresh for each start; it refuses placeholders and weak values
            "JWT_SECRET_KEY": secrets.token_urlsafe(48),
            "AUTH_ENCRYPTION_SECRET": secrets.token_urlsafe(48),
            "BASIC_AUTH_PASSWORD": secrets.token_urlsafe(24),
            "PLATFORM_ADMIN_PASSWORD": secrets.token_urlsafe(24) + "aA1!",
            "SSRF_ALLOW_LOCALHOST": "true",
            "RATE_LIMITING_ENABLED": "false",
            "DATABASE_URL": f"sqlite:///{tmp.name}/mcp.db",
            "LOG_LEVEL": "WARNING",
        }
        ps, urls = [], []
        for i, _ in enumerate(server_names(servers)):
            port = procs.free_port()
            argv = [
                str(contextforge_python()),
                "-m",
                "mcpgateway.translate",
                "--stdio",
                " ".join(backend_argv()),
                "--expose-streamable-http",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--logLevel",
                "warning",
            ]
            ps.append(procs.start(f"{self.name}-{servers}-{i}", argv, run_id, log_dir, env=env, cwd=tmp.name))
            urls.append(f"http://127.0.0.1:{port}/mcp")
        return Running(self.name, ps, urls, tmp=tmp)


def all_contenders() -> list[Contender]:
    return [
        Direct(),
        NullHttp(),
        ThinForwarder(),
        Mcpmesh("shared"),
        Mcpmesh("session"),
        Supergateway(),
        McpProxy(),
        ContextForge(),
    ]


__all__ = ["PEERS", "Contender", "Running", "all_contenders", "backend_argv"]
