"""The `mcpmesh` command: `up` runs the mesh in the foreground; `check-config` validates a file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

import uvicorn

from mcpmesh import __version__, logs
from mcpmesh.app import create_app
from mcpmesh.config import MeshConfig, load_config
from mcpmesh.errors import ConfigError
from mcpmesh.front.serving import SERVE_WITH
from mcpmesh.progress import show_progress
from mcpmesh.supervisor import Supervisor

CONTROL_COMMANDS = {
    "restart": "stop a server's processes and start them again (shared sessions stay)",
    "stop": "stop a server and keep it stopped until `start` (its sessions end)",
    "start": "start a stopped or failed server",
}
SETTLE_TIMEOUT = 120.0  # how long `up` waits for every server before printing where things stand
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SHUTDOWN_GRACE = 3  # seconds uvicorn waits for open connections (SSE streams) before closing them
# Per-request garbage (messages, futures, ASGI events) is short-lived and acyclic, so the default
# young-generation collection every 700 allocations only burned CPU (9% of the gateway's samples at
# 32 sessions, bench/README.md); every 50,000 still bounds how much cyclic garbage can pile up.
GC_THRESHOLDS = (50_000, 50, 100)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "up":
        return _up(args)
    if args.command in ("status", "ports"):
        return _inspect(args)
    if args.command in CONTROL_COMMANDS:
        return _control(args)
    # The client commands import what they need (httpx, rich, the MCP SDK) when they run, so that
    # `up` does not pay for them before it starts its servers (bench: cold start of 15 servers).
    if args.command == "validate":
        from rich.console import Console

        from mcpmesh.validate import validate

        url = _mesh_url(args)
        return 2 if url is None else validate(url, args.json, Console())
    if args.command in ("events", "logs"):
        return _tail(args)
    _parser().print_help()
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcpmesh", description="Supervise stdio MCP servers and serve them over MCP Streamable HTTP."
    )
    parser.add_argument("--version", action="version", version=f"mcpmesh {__version__}")
    sub = parser.add_subparsers(dest="command")
    up = sub.add_parser("up", help="run every configured server and serve them (foreground; Ctrl-C stops all)")
    up.add_argument(
        "--config", "-c", default="mcpmesh.toml", help="mcpmesh.toml or an mcpServers JSON file (default: %(default)s)"
    )
    up.add_argument("--host", help="override [mesh] host")
    up.add_argument("--port", type=int, help="override [mesh] port")
    up.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    up.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object per line (default: text)"
    )
    check = sub.add_parser("check-config", help="validate a config file and exit (0 when valid)")
    check.add_argument("file")
    status = sub.add_parser(
        "status", help="what the running mesh observed about each server (exit 1 unless all healthy)"
    )
    ports = sub.add_parser("ports", help="the port pool as the registry in state_dir records it")
    for command in (status, ports):
        command.add_argument("--config", "-c", default="mcpmesh.toml", help="the mesh's config (default: %(default)s)")
        command.add_argument("--json", action="store_true", help="print JSON instead of a table")
    events = sub.add_parser("events", help="the running mesh's event log: spawns, states, sessions, tool calls")
    events.add_argument("--server", help="only this server's events")
    server_logs = sub.add_parser("logs", help="a server's stderr, from the running mesh (secrets masked)")
    server_logs.add_argument("server")
    for command in (events, server_logs):
        command.add_argument("--follow", "-f", action="store_true", help="keep printing new entries until Ctrl-C")
        command.add_argument("--json", action="store_true", help="print one JSON object per line")
    for command in (status, events, server_logs):
        command.add_argument("--url", help="the mesh's base URL (default: from the config's host and port)")
    for command in (events, server_logs):
        command.add_argument("--config", "-c", default="mcpmesh.toml", help="the mesh's config (default: %(default)s)")
    check = sub.add_parser(
        "validate",
        help="connect to every server through every URL the registry advertises, as a client would; "
        "exit 1 on any gap between what the registry claims and what answers",
    )
    check.add_argument("--config", "-c", default="mcpmesh.toml", help="the mesh's config (default: %(default)s)")
    check.add_argument("--url", help="the mesh's base URL (default: from the config's host and port)")
    check.add_argument("--json", action="store_true", help="print the checks as JSON")
    for action, text in CONTROL_COMMANDS.items():
        command = sub.add_parser(action, help=text)
        command.add_argument("name", help="the server's name in the config")
        command.add_argument("--config", "-c", default="mcpmesh.toml", help="the mesh's config (default: %(default)s)")
        command.add_argument("--url", help="the mesh's base URL (default: from the config's host and port)")
    return parser


def _mesh_url(args: argparse.Namespace) -> str | None:
    """--url, else the config's host and port; None (after saying why) when the config is broken."""
    from mcpmesh.status import mesh_url

    if args.url:
        return str(args.url).rstrip("/")
    try:
        return mesh_url(load_config(args.config))
    except ConfigError as exc:
        print(f"error: {exc} (or give the mesh's --url)", file=sys.stderr)
        return None


def _control(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mcpmesh.control import control

    url = _mesh_url(args)
    return 2 if url is None else control(url, args.command, args.name, Console())


def _inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mcpmesh import status as inspect

    console = Console()
    if args.command == "status" and args.url:
        return inspect.status(args.url.rstrip("/"), args.json, console)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "ports":
        return inspect.ports(config, args.json, console)
    return inspect.status(args.url or inspect.mesh_url(config), args.json, console)


def _tail(args: argparse.Namespace) -> int:
    from mcpmesh import tail

    base_url = _mesh_url(args)
    if base_url is None:
        return 2
    if args.command == "events":
        return tail.events(base_url, args.server, args.follow, args.json)
    return tail.logs(base_url, args.server, args.follow, args.json)


def _check_config(path: str) -> int:
    from mcpmesh.backend.remote import safe_url

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, server in config.servers.items():
        if server.url is not None:  # header names only: their values may be secrets
            headers = f", headers: {', '.join(server.headers)}" if server.headers else ""
            print(f"{name}: {safe_url(server.url)} ({server.transport}, sharing={server.sharing}{headers})")
        else:
            print(f"{name}: {server.command} {' '.join(server.args)} (sharing={server.sharing})")
    print(f"{path}: OK, {len(config.servers)} server(s)")
    return 0


class _MeshServer(uvicorn.Server):
    """uvicorn's server with our own signal handling: SIGINT, SIGTERM and SIGHUP all start the
    graceful stop (every server process ended), and the process then exits normally instead of
    re-raising the signal as uvicorn does. A second signal forces the exit."""

    on_stop: Callable[[], None] = staticmethod(lambda: None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Sessions end first, so open streams close and calls in flight get an answer before
        # uvicorn waits for connections to finish.
        self.on_stop()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)


def _up(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        config = config.model_copy(update={"mesh": config.mesh.model_copy(update=overrides)})
    Path(config.mesh.state_dir).mkdir(parents=True, exist_ok=True)

    async def on_started(supervisor: Supervisor) -> None:
        # What start-up built (modules, config, app, servers) lives for good: never scan it again.
        gc.collect()
        gc.freeze()
        asyncio.get_running_loop().create_task(_report(supervisor, config))

    gc.set_threshold(*GC_THRESHOLDS)
    app = create_app(config, on_started)
    logs.configure(args.log_format, args.log_level, app.state.mesh.redact)
    server = _MeshServer(
        uvicorn.Config(
            app,
            host=config.mesh.host,
            port=config.mesh.port,
            log_level=args.log_level,
            log_config=None,  # uvicorn's records go through our handler too: one format, secrets masked
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
            **SERVE_WITH,
        )
    )
    server.on_stop = lambda: app.state.mesh.supervisor.end_client_streams("mesh stopping")
    server.run()
    return 0 if server.started else 1


async def _report(supervisor: Supervisor, config: MeshConfig) -> None:
    host = config.mesh.host if ":" not in config.mesh.host else f"[{config.mesh.host}]"
    base_url = f"http://{host}:{config.mesh.port}"
    await show_progress(supervisor, base_url, SETTLE_TIMEOUT, lambda line: print(line, flush=True))
