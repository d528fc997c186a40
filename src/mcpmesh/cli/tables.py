"""`mcpmesh status` and `mcpmesh ports`: what a running mesh reports, and the port pool on disk."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from mcpmesh.cli.locate import MeshAddress
from mcpmesh.errors import RegistryError
from mcpmesh.registry.sqlite import SqliteRegistry

STATE_STYLE = {
    "healthy": "green",
    "degraded": "yellow",
    "starting": "cyan",
    "restarting": "yellow",
    "unhealthy": "red",
    "failed": "bold red",
    "stopped": "dim",
}
REGISTRY_FILE = "registry.sqlite3"


PIPED_WIDTH = 1000  # piped, a table is as wide as its content: nothing is folded mid-word


def console() -> Console:
    """A console for the commands' output: the terminal's width, or (piped, COLUMNS unset) wide
    enough that no cell is folded, where rich would fold at 80 columns."""
    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS")  # set but empty: no width either
    return Console(width=PIPED_WIDTH if piped else None)


def status(base_url: str, as_json: bool, console: Console) -> int:
    """Print every server's observed state (and the registry's, when degraded); 0 when all are
    healthy and the registry keeps up, 1 otherwise, 2 if unreachable."""
    try:
        body = httpx.get(f"{base_url}/v1/servers", timeout=10).raise_for_status().json()
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the mesh at {base_url}: {exc}[/red]")
        return 2
    servers, registry = body["servers"], body.get("registry") or {}
    if as_json:
        console.print_json(json.dumps(servers))
    else:
        console.print(_servers_table(servers))
        if registry.get("state") == "degraded":  # serving from memory: said under the table
            console.print(f"[yellow]{registry['reason']}[/yellow]", soft_wrap=True)
    healthy = all(s["state"] == "healthy" for s in servers if s.get("enabled", True))
    return 0 if healthy and registry.get("state") != "degraded" else 1


def _servers_table(servers: list[dict[str, Any]]) -> Table:
    table = Table(title="mcpmesh servers", title_justify="left")
    for column in ("server", "state", "reason", "pid", "era", "sharing", "sessions", "restarts", "url"):
        table.add_column(column, overflow="fold")
    for s in servers:
        style = STATE_STYLE.get(s["state"], "")
        table.add_row(
            s["name"],
            f"[{style}]{s['state']}[/{style}]" if style else s["state"],
            s["reason"],
            str(s["pid"] or "-"),
            s["era"] or "-",
            s["sharing"],
            _sessions(s),
            str(s["restarts"]),
            s["urls"].get("dedicated_mcp") or s["urls"]["mcp"],
        )
    return table


def _sessions(server: dict[str, Any]) -> str:
    """`3 (1 idle)`: idle sessions are ones clients left without a DELETE, until they expire."""
    total, active = server["sessions"], server["active_sessions"]
    return str(total) if total == active else f"{total} ({total - active} idle)"


def ports(mesh: MeshAddress, as_json: bool, console: Console) -> int:
    """Print the port pool as the registry on disk records it (the mesh need not be running)."""
    assert mesh.state_dir is not None, "located on disk"
    path = mesh.state_dir / REGISTRY_FILE
    if not path.exists():
        console.print(f"no registry at {path} yet: the mesh has not run with this state_dir")
        return 0
    try:
        registry = SqliteRegistry(path)
        try:
            leases = registry.leases()
        finally:
            registry.close()
    except RegistryError as exc:  # corrupt, unreadable: one line, as `up` says it
        console.print(f"[red]error: {exc}[/red]", soft_wrap=True)
        return 2
    if as_json:
        rows = [{"port": x.port, "holder": x.holder, "state": x.state, "since": x.since} for x in leases]
        console.print_json(json.dumps({"range": mesh.ports, "ports": rows}))
        return 0
    table = Table(title=f"port pool {mesh.ports}", title_justify="left")
    for column in ("port", "holder", "state", "since"):
        table.add_column(column)
    for lease in leases:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.since))
        table.add_row(str(lease.port), lease.holder, lease.state, since)
    console.print(table)
    return 0
