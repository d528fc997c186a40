"""`mcpmesh import`: the MCP server configs people already have (read by client_sources.py) made
into one mesh config. Entries switched off stay off, one definition found in several files is one
server, different definitions of one name are conflicts (the first kept), and `${NAME}`
references stay references. What it says never holds a value from `env` or `headers`."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mcpmesh.cli import toml_text
from mcpmesh.cli.client_sources import Found, Place, place_of, read_place, standard_places
from mcpmesh.config import ENV_REFERENCE, ServerConfig
from mcpmesh.errors import ConfigError
from mcpmesh.observe.redact import CREDENTIAL_HEADER

EXIT_OK, EXIT_CONFLICTS, EXIT_ERROR = 0, 1, 2
# Literal values shaped like the well-known token formats (GitHub, GitLab, OpenAI, Slack, AWS).
SECRET_VALUE = re.compile(r"^(ghp_|gho_|ghs_|github_pat_|glpat-|sk-|xox[abpr]-|AKIA)")
NOT_EXPANDED = ("command", "args", "cwd", "url")  # mcpmesh expands ${NAME} only in env and headers


@dataclass
class Merged:
    """Servers by mesh name (the first definition), where each was found, and what went wrong."""

    servers: dict[str, Found] = field(default_factory=dict)
    origins: dict[str, list[str]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def import_configs(args: argparse.Namespace) -> int:
    home, cwd = Path(os.environ.get("HOME") or Path.home()), Path.cwd()
    output = None if args.output == "-" else Path(args.output)
    if output is not None and output.exists() and not (args.force or args.dry_run):
        say(f"error: {output} exists; pass --force to replace it, or --output another path")
        return EXIT_ERROR
    named = [place_of(Path(file), cwd) for file in args.files]
    places = named or [place for place in standard_places(home, cwd) if place.path.is_file()]
    if not places:
        where = ", ".join(str(place.path) for place in standard_places(home, cwd))
        say(f"error: no MCP client config found (looked for {where}); name the files to import")
        return EXIT_ERROR
    merged = Merged()
    read = _read_all(places, home, cwd, merged)
    if not read:
        for problem in merged.problems:
            say(f"error: {problem}")
        return EXIT_ERROR
    text = render(merged, read)
    if output is None:
        sys.stdout.write(text)
    elif not args.dry_run:
        try:
            _write(output, text)
        except OSError as exc:
            say(f"error: cannot write {output}: {exc.strerror or exc}")
            return EXIT_ERROR
    _summarize(merged, output, args.dry_run)
    return EXIT_CONFLICTS if merged.conflicts or merged.problems else EXIT_OK


def say(line: str) -> None:
    """Everything but the config itself goes to stderr: stdout may be the TOML (`--output -`)."""
    print(line, file=sys.stderr)


def _read_all(places: list[Place], home: Path, cwd: Path, merged: Merged) -> list[str]:
    """Read every file into `merged`; the files that could be read."""
    read = []
    for place in places:
        try:
            entries = read_place(place, home, cwd)
        except ConfigError as exc:
            merged.problems.append(f"{exc} (not imported)")
            continue
        read.append(str(place.path))
        say(f"read {place.path}: {len(entries)} server(s)")
        for entry in entries:
            add(merged, prepare(entry))
    return read


def prepare(found: Found) -> Found:
    """Make an entry a valid mesh server table, or say why it cannot be one."""
    if found.problem is not None:
        return found
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", found.name).lstrip("_.-")[:64] or "server"
    if name != found.name:
        found.notes.append(f"renamed from {found.name!r} (mesh names are 1-64 of A-Z a-z 0-9 _ . -)")
        found.name = name
    table = {key: v for key, v in found.table.items() if v not in ({}, [])}
    secret = [n for n, v in table.get("env", {}).items() if CREDENTIAL_HEADER.search(n) or SECRET_VALUE.match(v)]
    if secret:
        table["secret_env"] = secret  # masked in the mesh's logs
    fields = [key for key in NOT_EXPANDED if any(ENV_REFERENCE.search(v) for v in _strings(table.get(key)))]
    if fields and table.get("enabled", True):
        table["enabled"] = False
        found.notes.append(
            f"{', '.join(fields)} hold ${{NAME}}, which mcpmesh expands only in env and headers: "
            "edit them, then remove `enabled = false`"
        )
    found.table = table
    found.problem = _invalid(table)
    return found


def _invalid(table: dict[str, Any]) -> str | None:
    """What the mesh would refuse in this table (checked with every `${NAME}` taken as set)."""
    probe = dict(table)
    for key in ("env", "headers"):
        if key in probe:
            probe[key] = {k: ENV_REFERENCE.sub("x", v) for k, v in probe[key].items()}
    try:
        ServerConfig.model_validate(probe)
    except ValidationError as exc:
        first = exc.errors()[0]  # its message only: the input may be a secret
        keys = [str(part) for part in first["loc"]] + (first["ctx"]["key"] if first["type"] == "mesh_setting" else [])
        return f"{'.'.join(keys) or 'server'}: {first['msg'].removeprefix('Value error, ')}"
    return None


def add(merged: Merged, found: Found) -> None:
    """One entry into the merge: a new name, the same definition again, or a conflict."""
    where = f"{found.origin}: {found.name}"
    if found.problem is not None:
        merged.problems.append(f"{where}: {found.problem} (not imported)")
        return
    kept = merged.servers.get(found.name)
    if kept is None:
        merged.servers[found.name] = found
        merged.origins[found.name] = [found.origin]
    elif kept.table == found.table:
        merged.origins[found.name].append(found.origin)
        kept.notes += [note for note in found.notes if note not in kept.notes]
    else:
        differ = sorted({*kept.table, *found.table} - {k for k in kept.table if kept.table[k] == found.table.get(k)})
        merged.conflicts.append(
            f"conflict: server {found.name!r} in {found.origin} differs from the one kept from "
            f"{merged.origins[found.name][0]} (in {', '.join(differ)}); it is not imported"
        )


def render(merged: Merged, read: list[str]) -> str:
    """The mesh config: a header saying where it came from, then each server with its notes."""
    head = ["Written by `mcpmesh import` from:", *(f"  {path}" for path in read)]
    head += ["Check it with `mcpmesh check-config FILE`, run it with `mcpmesh up --config FILE`."]
    comments = {name: [f"from {', '.join(merged.origins[name])}", *f.notes] for name, f in merged.servers.items()}
    for conflict in merged.conflicts:
        comments[_named(conflict)].append(conflict)
    tables = {name: found.table for name, found in merged.servers.items()}
    text = "\n".join(line for part in head for line in toml_text.comment(part)) + "\n"
    text += toml_text.server_tables(tables, comments)
    assert tomllib.loads(text).get("servers", {}) == tables, "the TOML writer lost something"
    return text


def _named(conflict: str) -> str:
    """The server a conflict message is about."""
    return conflict.split("'", 2)[1]


def _write(path: Path, text: str) -> None:
    """Write atomically, readable by its owner only (it may hold the sources' literal secrets)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def _summarize(merged: Merged, output: Path | None, dry_run: bool) -> None:
    off = [name for name, found in merged.servers.items() if not found.table.get("enabled", True)]
    verb = "would write" if dry_run else "wrote"
    target = "stdout" if output is None else str(output)
    say(f"{verb} {target}: {len(merged.servers)} server(s)" + (f", {len(off)} disabled" if off else ""))
    for name, found in merged.servers.items():
        state = " (disabled: not started)" if name in off else ""
        say(f"  {name:<20} from {', '.join(merged.origins[name])}{state}")
        for note in found.notes:
            say(f"      note: {note}")
    for line in merged.conflicts + [f"error: {problem}" for problem in merged.problems]:
        say(line)
    needed = sorted({m.group(1) for name in set(merged.servers) - set(off) for m in _references(merged.servers[name])})
    if needed:
        unset = [name for name in needed if name not in os.environ]
        say(f"set before `mcpmesh up`: {', '.join(needed)}" + (f" (unset now: {', '.join(unset)})" if unset else ""))
    if output is not None and not dry_run:
        say(f"check it: mcpmesh check-config {output}")


def _references(found: Found) -> list[re.Match[str]]:
    """The `${NAME}` references (without default) in a server's env and headers."""
    values = [*found.table.get("env", {}).values(), *found.table.get("headers", {}).values()]
    return [m for v in values for m in ENV_REFERENCE.finditer(v) if m.group(2) is None]


def _strings(item: Any) -> list[str]:
    return (
        [item] if isinstance(item, str) else [v for v in item if isinstance(v, str)] if isinstance(item, list) else []
    )
