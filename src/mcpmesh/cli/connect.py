"""`mcpmesh connect|disconnect CLIENT`: add the mesh's servers to an MCP client's config, and take
back exactly what was added, using the record of what each connect did (connections.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from mcpmesh.cli.client_configs import CLIENTS, Client, Entry, with_entries, without_entries
from mcpmesh.cli.connections import Connections, Record, atomic_write, digest, read_text, remove_made_folders
from mcpmesh.errors import ConfigError

CLI_TIMEOUT = 60.0  # a client's `mcp add` or `mcp remove` only edits its file


def connect(base_url: str, client_name: str | None, *, dry_run: bool, workspace: bool) -> int:
    """0 when every client points at every server, 1 on a conflict or an unreadable file, 2 when the
    mesh cannot be asked for its servers."""
    try:
        servers = mesh_servers(base_url)
    except httpx.HTTPError as exc:
        print(f"error: cannot ask the mesh at {base_url} for its servers: {exc}", file=sys.stderr)
        return 2
    connections = Connections.load()
    worst = 0
    for client in _clients(client_name):
        try:
            worst = max(worst, _connect(client, servers, connections, base_url, dry_run, workspace))
        except ConfigError as exc:
            print(f"{client.name}: {exc}")
            worst = 1
    return worst


def disconnect(client_name: str | None, *, dry_run: bool, workspace: bool) -> int:
    """0 when what connect added is gone (or was never there), 1 when some of it was left (changed since)."""
    connections = Connections.load()
    worst = 0
    for client in _clients(client_name):
        try:
            worst = max(worst, _disconnect(client, connections, dry_run, workspace))
        except ConfigError as exc:
            print(f"{client.name}: {exc}")
            worst = 1
    return worst


def mesh_servers(base_url: str) -> dict[str, str]:
    """Every server's name and Streamable HTTP URL, as the mesh reports them."""
    reply = httpx.get(f"{base_url}/v1/servers", timeout=10).raise_for_status().json()
    return {server["name"]: server["urls"]["mcp"] for server in reply["servers"]}


def _clients(name: str | None) -> list[Client]:
    if name is not None:
        return [CLIENTS[name]]
    found = [client for client in CLIENTS.values() if client.found()]
    if not found:
        print("no MCP client found on this machine (" + ", ".join(CLIENTS) + ")")
    return found


def _connect(
    client: Client, servers: dict[str, str], connections: Connections, base: str, dry_run: bool, workspace: bool
) -> int:
    path = client.file(workspace)
    text = read_text(path)
    present = client.servers(client.read(text, path))
    record = connections.get(client.name, path)
    mine = record.entries if record else {}
    add: dict[str, Entry] = {}
    conflicts = []
    for name, url in servers.items():
        wanted = client.entry(url)
        if present.get(name) == wanted:
            continue
        if name in present and present[name] != mine.get(name):
            conflicts.append(name)
        else:
            add[name] = wanted
    if conflicts:
        for name in conflicts:
            print(f"{client.name}: {name!r} in {path} is someone else's ({json.dumps(present[name])}): left as it is")
        print(f"{client.name}: nothing changed; rename or remove those entries, then connect again")
        return 1
    executable = client.executable()
    how = f"with {executable}" if executable else f"in {path}"
    if not add:
        print(f"{client.name}: already points at every mesh server ({path})")
        return 0
    for name, entry in add.items():
        print(f"{client.name}: {'would add' if dry_run else 'adding'} {name} {json.dumps(entry)} {how}")
    if dry_run:
        return 0
    if record is None:
        record = connections.start(client.name, path, base, text)
    try:
        if executable and client.add:
            record.via = "cli"
            for name, entry in add.items():  # recorded one by one: a failure midway forgets nothing added
                _run_cli(executable, client.add(name, servers[name]))
                record.entries[name] = entry
        else:
            _write(path, with_entries(client, path, text, add), record)
            record.entries.update(add)
    finally:
        connections.save()
    print(f"{client.name}: {len(add)} server(s) added; `mcpmesh disconnect {client.name}` takes them back")
    return 0


def _disconnect(client: Client, connections: Connections, dry_run: bool, workspace: bool) -> int:
    path = client.file(workspace)
    record = connections.get(client.name, path)
    if record is None or not record.entries:
        print(f"{client.name}: nothing of the mesh's in {path}")
        return 0
    text = read_text(path)
    present = client.servers(client.read(text, path))
    ours = {name: entry for name, entry in record.entries.items() if present.get(name) == entry}
    changed = sorted(set(record.entries) - set(ours))
    for name in changed:
        print(f"{client.name}: {name!r} changed since connect (or is gone): left as it is")
    for name in ours:
        print(f"{client.name}: {'would remove' if dry_run else 'removing'} {name} from {path}")
    if dry_run:
        return 1 if changed else 0
    try:
        if record.via == "cli" and (executable := client.executable()) and client.remove:
            for name in ours:
                _run_cli(executable, client.remove(name))
                del record.entries[name]
        elif text is not None and digest(text) == record.written:
            _restore(path, record)  # nobody touched it since: back to the very bytes it had
        elif text is not None and ours:
            _write(path, without_entries(client, path, text, ours), record)
        connections.forget(record)
    finally:
        connections.save()
    return 1 if changed else 0


def _write(path: Path, text: str, record: Record) -> None:
    atomic_write(path, text)
    record.written = digest(text)


def _restore(path: Path, record: Record) -> None:
    original = read_text(record.backup_path) if record.backup_path else None
    if original is not None:
        atomic_write(path, original)
    elif not record.existed:
        path.unlink()
        remove_made_folders(path, record.made_folder)


def _run_cli(executable: str, args: list[str]) -> None:
    """Run the client's own CLI (never through a shell); ConfigError with its words when it refuses."""
    done = subprocess.run([executable, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)
    if done.returncode != 0:
        raise ConfigError(executable, f"`{' '.join(args)}` failed: {(done.stderr or done.stdout).strip()}")
