"""The `mcpmesh` command: its arguments, and which subcommand's module runs (`up` in up.py, the
client commands in the modules they name); `check-config` is answered here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mcpmesh import __version__
from mcpmesh.cli.up import up
from mcpmesh.config import load_config
from mcpmesh.errors import ConfigError, MeshNotFound

if TYPE_CHECKING:
    from mcpmesh.cli.locate import MeshAddress

CONTROL_COMMANDS = {
    "restart": "stop a server's processes and start them again (shared sessions stay)",
    "stop": "stop a server and keep it stopped until `start` (its sessions end)",
    "start": "start a stopped or failed server",
}

FIND_HELP = (
    "the mesh's config (default: the running mesh found from the working directory, "
    "else ./mcpmesh.toml or one in a parent directory)"
)
URL_HELP = "the mesh's base URL (default: $MCPMESH_URL, else found as --config says)"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "up":
        return up(args)
    if args.command in ("status", "ports"):
        return _inspect(args)
    if args.command in CONTROL_COMMANDS or args.command == "reload":
        return _control(args)
    # The client commands import what they need (httpx, rich, the MCP SDK) when they run, so that
    # `up` does not pay for them before it starts its servers (bench: cold start of 15 servers).
    if args.command == "validate":
        from mcpmesh.cli.tables import console
        from mcpmesh.cli.validate import validate

        url = _mesh_url(args)
        return 2 if url is None else validate(url, args.json, console(), args.allow_stopped)
    if args.command in ("events", "logs"):
        return _tail(args)
    if args.command == "import":
        from mcpmesh.cli.import_configs import import_configs

        return import_configs(args)
    if args.command == "stdio":
        from mcpmesh.cli.stdio_bridge import stdio

        return stdio(args.url)
    if args.command in ("connect", "disconnect"):
        return _connect(args)
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
    up.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: warning with --log-format text (the progress lines, then trouble only), info with json",
    )
    up.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object per line (default: text)"
    )
    up.add_argument(
        "--watch", action="store_true", help="reload whenever the config file changes (as SIGHUP or `mcpmesh reload`)"
    )
    check = sub.add_parser("check-config", help="validate a config file and exit (0 when valid)")
    check.add_argument("file")
    status = sub.add_parser(
        "status", help="what the running mesh observed about each server (exit 1 unless all healthy)"
    )
    ports = sub.add_parser("ports", help="the port pool as the registry in state_dir records it")
    for command in (status, ports):
        command.add_argument("--config", "-c", help=FIND_HELP)
        command.add_argument("--json", action="store_true", help="print JSON instead of a table")
    events = sub.add_parser("events", help="the running mesh's event log: spawns, states, sessions, tool calls")
    events.add_argument("--server", help="only this server's events")
    server_logs = sub.add_parser("logs", help="a server's stderr, from the running mesh (secrets masked)")
    server_logs.add_argument("server")
    for command in (events, server_logs):
        command.add_argument("--follow", "-f", action="store_true", help="keep printing new entries until Ctrl-C")
        command.add_argument("--json", action="store_true", help="print one JSON object per line")
    for command in (events, server_logs):
        _mesh_options(command)
    status.add_argument("--url", help=URL_HELP)
    check = sub.add_parser(
        "validate",
        help="connect to every server through every URL the registry advertises, as a client would; "
        "exit 1 on any gap between what the registry claims and what answers",
    )
    _mesh_options(check)
    check.add_argument("--json", action="store_true", help="print the checks as JSON")
    check.add_argument(
        "--allow-stopped",
        action="store_true",
        help="accept servers an operator stopped (default: a stopped server fails)",
    )
    imports = sub.add_parser(
        "import",
        help="write one mesh config from the MCP server configs of Claude Desktop, Claude Code, Cursor, "
        "VS Code and Codex (exit 1 on a conflict or an entry not imported)",
    )
    imports.add_argument("files", nargs="*", metavar="FILE", help="configs to read (default: the clients' own places)")
    imports.add_argument("--output", "-o", default="mcpmesh.toml", help="where to write; - for stdout (%(default)s)")
    imports.add_argument("--force", action="store_true", help="replace the output file if it exists")
    imports.add_argument("--dry-run", action="store_true", help="say what would be written, write nothing")
    for action, text in CONTROL_COMMANDS.items():
        command = sub.add_parser(action, help=text)
        command.add_argument("name", help="the server's name in the config")
        _mesh_options(command)
    reload = sub.add_parser(
        "reload",
        help="make the running mesh read its config file again: added servers start, removed ones stop, "
        "changed ones restart, the others keep running (exit 1 when the new file is refused)",
    )
    _mesh_options(reload)
    reload.add_argument("--json", action="store_true", help="print the result as JSON")
    _connect_parsers(sub)
    bridge = sub.add_parser(
        "stdio", help="bridge stdin/stdout to one Streamable HTTP URL (for clients that speak only stdio)"
    )
    bridge.add_argument("url", help="a server's MCP URL, e.g. http://127.0.0.1:11090/servers/time/mcp")
    return parser


def _mesh_options(command: argparse.ArgumentParser) -> None:
    """--config and --url: how a client command finds the mesh (locate.py)."""
    command.add_argument("--config", "-c", help=FIND_HELP)
    command.add_argument("--url", help=URL_HELP)


def _connect_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from mcpmesh.cli.client_configs import CLIENTS

    texts = {
        "connect": "point an MCP client at every mesh server (its own CLI where installed, else its config file)",
        "disconnect": "remove from an MCP client exactly what `connect` added",
    }
    for action, text in texts.items():
        command = sub.add_parser(action, help=text)
        command.add_argument("client", nargs="?", choices=sorted(CLIENTS), help="the client")
        command.add_argument("--all", action="store_true", help="every client found on this machine")
        command.add_argument("--dry-run", action="store_true", help="print the change and write nothing")
        command.add_argument(
            "--workspace", action="store_true", help="cursor, vscode: the project's file here instead of the user's"
        )
        if action == "connect":  # disconnect needs no mesh: what connect added is on record
            _mesh_options(command)


def _connect(args: argparse.Namespace) -> int:
    from mcpmesh.cli.connect import connect, disconnect

    if (args.client is None) == (not args.all):
        print("error: name one client, or give --all (not both)", file=sys.stderr)
        return 2
    if args.command == "disconnect":
        return disconnect(args.client, dry_run=args.dry_run, workspace=args.workspace)
    url = _mesh_url(args)
    return 2 if url is None else connect(url, args.client, dry_run=args.dry_run, workspace=args.workspace)


def _mesh_url(args: argparse.Namespace) -> str | None:
    """Where the mesh to talk to listens; None (after saying why) when nothing says."""
    address = _locate(args)
    return None if address is None else address.url


def _locate(args: argparse.Namespace, on_disk: bool = False) -> MeshAddress | None:
    from mcpmesh.cli.locate import locate

    try:
        return locate(getattr(args, "url", None), args.config, Path.cwd(), on_disk=on_disk)
    except ConfigError as exc:
        print(f"error: {exc} (or give the mesh's --url)", file=sys.stderr)
        return None
    except MeshNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _control(args: argparse.Namespace) -> int:
    from mcpmesh.cli.server_control import control, reload
    from mcpmesh.cli.tables import console

    url = _mesh_url(args)
    if url is None:
        return 2
    if args.command == "reload":
        return reload(url, args.json, console())
    return control(url, args.command, args.name, console())


def _inspect(args: argparse.Namespace) -> int:
    from mcpmesh.cli import tables as inspect

    console = inspect.console()
    address = _locate(args, on_disk=args.command == "ports")  # the pool is read from the registry
    if address is None:
        return 2
    if args.command == "ports":
        return inspect.ports(address, args.json, console)
    return inspect.status(address.url, args.json, console)


def _tail(args: argparse.Namespace) -> int:
    from mcpmesh.cli import events_and_logs as tail

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
