"""Where the MCP clients keep their server configs, and each file's entries read as mesh server
tables: Claude Desktop, Claude Code, Cursor and VS Code (JSON), and Codex (TOML), each as its
documentation describes it (cited where it is read)."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcpmesh.errors import ConfigError

# ${...} in a client's value: `NAME` or `NAME:-default` (Claude Code), `env:NAME` (VS Code, Cursor),
# `input:ID` (VS Code), and the editors' own `userHome`, `workspaceFolder`, ...
VARIABLE = re.compile(r"\$\{([^}]*)\}")
KEPT_REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(:-.*)?$", re.DOTALL)
JSON_KEYS = {"type", "command", "args", "env", "envFile", "cwd", "url", "headers", "disabled"}
CODEX_KEYS = {"command", "args", "env", "env_vars", "cwd", "url", "enabled", "startup_timeout_sec"}
CODEX_KEYS |= {"startup_timeout_ms", "tool_timeout_sec", "bearer_token_env_var", "http_headers", "env_http_headers"}
TRANSPORTS = {"http": "streamable-http", "streamable-http": "streamable-http", "streamableHttp": "streamable-http"}
TRANSPORTS |= {"sse": "sse"}


@dataclass(frozen=True)
class Place:
    """A client's config file, and the folder its `${workspaceFolder}` means."""

    path: Path
    workspace: Path


@dataclass
class Found:
    """One server entry of a client's file, as a mesh server table (`problem`: it cannot be one)."""

    name: str
    table: dict[str, Any]
    origin: str
    notes: list[str] = field(default_factory=list)
    problem: str | None = None


def standard_places(home: Path, cwd: Path) -> list[Place]:
    """Every file the clients read their servers from, for this user in this folder, in the order
    definitions of one name are preferred (the first wins)."""
    user = [
        # Claude Code: user and local scopes (https://code.claude.com/docs/en/mcp)
        home / ".claude.json",
        # Claude Desktop on Linux and macOS (https://modelcontextprotocol.io/quickstart/user)
        home / ".config" / "Claude" / "claude_desktop_config.json",
        home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json",
        home / ".cursor" / "mcp.json",  # Cursor, global (https://cursor.com/docs/mcp)
        # VS Code's user profile (https://code.visualstudio.com/docs/copilot/reference/mcp-configuration)
        home / ".config" / "Code" / "User" / "mcp.json",
        home / "Library" / "Application Support" / "Code" / "User" / "mcp.json",
        home / ".codex" / "config.toml",  # Codex (https://developers.openai.com/codex/mcp)
    ]
    project = [cwd / ".mcp.json", cwd / ".cursor" / "mcp.json", cwd / ".vscode" / "mcp.json"]
    project.append(cwd / ".codex" / "config.toml")
    return [Place(path, cwd) for path in [*project, *user]]


def place_of(path: Path, cwd: Path) -> Place:
    """A file named on the command line: `.cursor/mcp.json` and `.vscode/mcp.json` belong to the
    folder above theirs, `.mcp.json` to its own; others to the working directory."""
    folder = path.resolve().parent
    if folder.name in (".cursor", ".vscode", ".codex"):
        return Place(path, folder.parent)
    return Place(path, folder if path.name == ".mcp.json" else cwd)


def read_place(place: Place, home: Path, cwd: Path) -> list[Found]:
    """The server entries of one file; ConfigError when it cannot be read or has none of the shapes."""
    try:
        text = place.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(place.path), f"cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    if place.path.suffix == ".toml":
        return _codex(place, text, home)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(place.path), f"invalid JSON: {exc.msg}", line=exc.lineno) from exc
    if not isinstance(doc, dict):
        raise ConfigError(str(place.path), "expected a JSON object")
    found: list[Found] = []
    origin = str(place.path)
    if isinstance(doc.get("servers"), dict):  # VS Code: "servers" and "inputs"
        inputs = {i["id"]: i for i in doc.get("inputs", []) if isinstance(i, dict) and isinstance(i.get("id"), str)}
        found += _json_entries(doc["servers"], origin, Variables(home, place.workspace, inputs))
    if isinstance(doc.get("mcpServers"), dict):  # Claude Desktop, Claude Code, Cursor
        found += _json_entries(doc["mcpServers"], origin, Variables(home, place.workspace))
    project = doc.get("projects", {}).get(str(cwd)) if isinstance(doc.get("projects"), dict) else None
    if isinstance(project, dict) and isinstance(project.get("mcpServers"), dict):  # ~/.claude.json, local scope
        found += _json_entries(project["mcpServers"], f"{origin} (project {cwd})", Variables(home, cwd))
    if not any(isinstance(doc.get(key), dict) for key in ("servers", "mcpServers", "projects")):
        raise ConfigError(str(place.path), 'no "mcpServers" or "servers" object: not an MCP client config')
    return found


@dataclass
class Variables:
    """Turns a client's `${...}` into the mesh's: `${NAME}` references stay references (never
    expanded here), the editors' folder variables become paths; notes say what could not."""

    home: Path
    workspace: Path
    inputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __call__(self, value: Any, where: str) -> str:
        text = value if isinstance(value, str) else json.dumps(value)  # JSON's true is "true", not "True"
        return VARIABLE.sub(lambda match: self._one(match.group(1), where), text)

    def _one(self, inner: str, where: str) -> str:
        if inner.startswith("env:"):
            return "${" + inner.removeprefix("env:") + "}"
        if inner.startswith("input:"):
            input_id = inner.removeprefix("input:")
            name = re.sub(r"[^A-Za-z0-9_]", "_", input_id).upper()
            name = name if re.match(r"[A-Z_]", name) else f"_{name}"
            about = self.inputs.get(input_id, {}).get("description")
            said = f" ({about})" if isinstance(about, str) else ""
            self.notes.append(f"{where}: VS Code asks for input {input_id!r}{said}; here it is ${{{name}}}: set {name}")
            return "${" + name + "}"
        known = {"userHome": str(self.home), "workspaceFolder": str(self.workspace)}
        known |= {"workspaceFolderBasename": self.workspace.name, "pathSeparator": "/", "/": "/"}
        if inner in known:
            return known[inner]
        if not KEPT_REFERENCE.match(inner):
            self.notes.append(f"{where}: ${{{inner}}} has no meaning outside its client; left as written")
        return "${" + inner + "}"


def _json_entries(entries: dict[str, Any], origin: str, variables: Variables) -> list[Found]:
    return [_json_entry(str(name), entry, origin, variables) for name, entry in entries.items()]


def _json_entry(name: str, entry: Any, origin: str, base: Variables) -> Found:
    """One `mcpServers` / `servers` entry (command/args/env/envFile/cwd, or type/url/headers)."""
    found = Found(name, {}, origin)
    if not isinstance(entry, dict):
        found.problem = "the entry is not an object"
        return found
    tr = Variables(base.home, base.workspace, base.inputs, found.notes)
    table = found.table
    kind = entry.get("type")
    if kind is not None and kind != "stdio" and kind not in TRANSPORTS:
        found.problem = f"unknown server type {kind!r}"
        return found
    if "command" in entry:
        table["command"] = tr(entry["command"], "command")
        table["args"] = [tr(arg, "args") for arg in _list(entry.get("args"))]
        env = _dict(entry.get("env"))
        table["env"] = {str(k): tr(v, f"env.{k}") for k, v in env.items() if v is not None}  # null: unset
        if isinstance(entry.get("envFile"), str):
            _env_file(Path(tr(entry["envFile"], "envFile")), table["env"], found.notes)
        if isinstance(entry.get("cwd"), str):
            table["cwd"] = tr(entry["cwd"], "cwd")
    elif "url" in entry:
        table["url"] = tr(entry["url"], "url")
        guessed = "sse" if str(entry["url"]).rstrip("/").endswith("/sse") else "streamable-http"  # Cursor guesses
        table["transport"] = TRANSPORTS.get(str(kind), guessed)
        table["headers"] = {str(k): tr(v, f"headers.{k}") for k, v in _dict(entry.get("headers")).items()}
    else:
        found.problem = "neither `command` nor `url`"
        return found
    if entry.get("disabled") is True:
        table["enabled"] = False
    _note_ignored(entry, JSON_KEYS, found.notes)
    return found


def _codex(place: Place, text: str, home: Path) -> list[Found]:
    """Codex's `[mcp_servers.NAME]` tables (https://developers.openai.com/codex/mcp)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(place.path), f"invalid TOML: {exc}") from exc
    servers = doc.get("mcp_servers", {})
    if not isinstance(servers, dict):
        raise ConfigError(str(place.path), "must be a table", key="mcp_servers")
    return [
        _codex_entry(str(name), e, str(place.path), Variables(home, place.workspace)) for name, e in servers.items()
    ]


def _codex_entry(name: str, entry: Any, origin: str, base: Variables) -> Found:
    found = Found(name, {}, origin)
    if not isinstance(entry, dict):
        found.problem = "the entry is not a table"
        return found
    tr = Variables(base.home, base.workspace, notes=found.notes)
    table = found.table
    if "command" in entry:
        table["command"] = tr(entry["command"], "command")
        table["args"] = [tr(arg, "args") for arg in _list(entry.get("args"))]
        table["env"] = {str(k): tr(v, f"env.{k}") for k, v in _dict(entry.get("env")).items()}
        forwarded = [v if isinstance(v, str) else v.get("name") for v in _list(entry.get("env_vars"))]
        table["inherit_env"] = [v for v in forwarded if isinstance(v, str)]
        if isinstance(entry.get("cwd"), str):
            table["cwd"] = tr(entry["cwd"], "cwd")
    elif "url" in entry:
        table["url"] = tr(entry["url"], "url")
        headers = {str(k): str(v) for k, v in _dict(entry.get("http_headers")).items()}
        headers |= {str(k): "${" + str(v) + "}" for k, v in _dict(entry.get("env_http_headers")).items()}
        if isinstance(entry.get("bearer_token_env_var"), str):
            headers["Authorization"] = "Bearer ${" + entry["bearer_token_env_var"] + "}"
        table["headers"] = headers
    else:
        found.problem = "neither `command` nor `url`"
        return found
    if entry.get("enabled") is False:
        table["enabled"] = False
    startup = entry.get("startup_timeout_sec", _ms(entry.get("startup_timeout_ms")))
    if isinstance(startup, int | float) and startup > 0:
        table["startup_timeout"] = float(startup)
    if isinstance(entry.get("tool_timeout_sec"), int | float) and entry["tool_timeout_sec"] > 0:
        table["request_timeout"] = float(entry["tool_timeout_sec"])
    _note_ignored(entry, CODEX_KEYS, found.notes)
    return found


def _env_file(path: Path, env: dict[str, str], notes: list[str]) -> None:
    """An `envFile`'s names become `${NAME}` references, so its values stay in that file alone."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        notes.append(f"envFile {path} could not be read: its variables are not imported")
        return
    names = []
    for line in lines:
        key = line.strip().removeprefix("export ").partition("=")[0].strip()
        if "=" in line and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and not line.lstrip().startswith("#"):
            env.setdefault(key, "${" + key + "}")
            names.append(key)
    if names:
        notes.append(f"envFile {path}: {', '.join(names)} are ${{NAME}} references: export them before `mcpmesh up`")


def _note_ignored(entry: dict[str, Any], known: set[str], notes: list[str]) -> None:
    ignored = sorted(str(key) for key in entry if key not in known)
    if ignored:
        notes.append(f"not imported (no mesh setting): {', '.join(ignored)}")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _ms(value: Any) -> float | None:
    return value / 1000 if isinstance(value, int | float) else None
