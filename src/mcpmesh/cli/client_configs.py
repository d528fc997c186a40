"""Where each MCP client keeps its servers and how it spells one: the file, the section, the entry
for a mesh server's URL, and the client's own CLI where it has one. Formats as each client documents them."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcpmesh.errors import ConfigError

Entry = dict[str, Any]


@dataclass(frozen=True)
class Client:
    name: str
    section: str  # the object (JSON) or table (TOML) that maps names to servers
    entry: Callable[[str], Entry]  # a mesh server's MCP URL -> this client's definition of it
    file: Callable[[bool], Path]  # workspace? -> the config file
    cli: str | None = None  # the client's own executable, which edits its file where it is installed
    add: Callable[[str, str], list[str]] | None = None  # (name, url) -> its CLI's arguments
    remove: Callable[[str], list[str]] | None = None

    def executable(self) -> str | None:
        return shutil.which(self.cli) if self.cli else None

    def found(self) -> bool:
        """Installed here: its CLI is on PATH, or its config file (or the folder of its own that holds it) exists."""
        path = self.file(False)
        return self.executable() is not None or path.exists() or (path.parent != _home() and path.parent.is_dir())

    def read(self, text: str | None, path: Path) -> dict[str, Any]:
        """The file's document ({} for a missing or empty file); ConfigError when it cannot be parsed."""
        if text is None or not text.strip():
            return {}
        try:
            document = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(str(path), f"cannot parse it, so it is left as it is ({exc})") from exc
        if not isinstance(document, dict) or not isinstance(document.get(self.section, {}), dict):
            raise ConfigError(str(path), "not the shape this client documents", key=self.section)
        return document

    def servers(self, document: dict[str, Any]) -> dict[str, Any]:
        return dict(document.get(self.section, {}))


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def _app_config(folder: str) -> Path:
    """An application's folder: ~/Library/Application Support on macOS, $XDG_CONFIG_HOME (~/.config) elsewhere."""
    if sys.platform == "darwin":
        return _home() / "Library" / "Application Support" / folder
    return Path(os.environ.get("XDG_CONFIG_HOME") or _home() / ".config") / folder


def mcpmesh_command() -> list[str]:
    """How a client that speaks only stdio runs this mesh's bridge: the absolute path of `mcpmesh`."""
    beside = Path(sys.executable).parent / "mcpmesh"
    found = str(beside) if beside.is_file() else shutil.which("mcpmesh")
    return [str(Path(found).resolve())] if found else [sys.executable, "-m", "mcpmesh"]


def _desktop_entry(url: str) -> Entry:
    command, *prefix = mcpmesh_command()
    return {"command": command, "args": [*prefix, "stdio", url]}


# Claude Code: `claude mcp add --transport http --scope user NAME URL` writes
# {"type": "http", "url": ...} under "mcpServers" at the top of ~/.claude.json (user scope)
# (https://docs.anthropic.com/en/docs/claude-code/mcp: "Add a remote HTTP server", "MCP installation scopes").
CLAUDE_CODE = Client(
    "claude-code",
    "mcpServers",
    lambda url: {"type": "http", "url": url},
    lambda workspace: _home() / ".claude.json",
    cli="claude",
    add=lambda name, url: ["mcp", "add", "--transport", "http", "--scope", "user", name, url],
    remove=lambda name: ["mcp", "remove", "--scope", "user", name],
)
# Codex: `codex mcp add NAME --url URL` writes [mcp_servers.NAME] url = "..." (Streamable HTTP) to
# $CODEX_HOME/config.toml, ~/.codex/config.toml by default (https://developers.openai.com/codex/mcp).
CODEX = Client(
    "codex",
    "mcp_servers",
    lambda url: {"url": url},
    lambda workspace: Path(os.environ.get("CODEX_HOME") or _home() / ".codex") / "config.toml",
    cli="codex",
    add=lambda name, url: ["mcp", "add", name, "--url", url],
    remove=lambda name: ["mcp", "remove", name],
)
# Cursor: ~/.cursor/mcp.json, "mcpServers", a remote server is {"url": ...}; Cursor tells Streamable
# HTTP from SSE itself (https://cursor.com/docs/mcp, "Using mcp.json").
CURSOR = Client(
    "cursor",
    "mcpServers",
    lambda url: {"url": url},
    lambda workspace: (Path.cwd() if workspace else _home()) / ".cursor" / "mcp.json",
)
# VS Code: mcp.json in the user profile (Code/User/mcp.json) or the workspace (.vscode/mcp.json),
# "servers", an HTTP server is {"type": "http", "url": ...}
# (https://code.visualstudio.com/docs/copilot/reference/mcp-configuration, "HTTP and Server-Sent Events (SSE) servers").
VSCODE = Client(
    "vscode",
    "servers",
    lambda url: {"type": "http", "url": url},
    lambda workspace: Path.cwd() / ".vscode" / "mcp.json" if workspace else _app_config("Code") / "User" / "mcp.json",
)
# Claude Desktop: claude_desktop_config.json in Claude's application folder, "mcpServers" with
# {"command", "args"}: it starts stdio servers only, so its entry runs the bridge
# (https://modelcontextprotocol.io/quickstart/user, "Adding the Filesystem Server").
CLAUDE_DESKTOP = Client(
    "claude-desktop",
    "mcpServers",
    _desktop_entry,
    lambda workspace: _app_config("Claude") / "claude_desktop_config.json",
)
CLIENTS = {client.name: client for client in (CLAUDE_CODE, CODEX, CURSOR, VSCODE, CLAUDE_DESKTOP)}


def with_entries(client: Client, path: Path, text: str | None, entries: dict[str, Entry]) -> str:
    """The file's text with these entries set: JSON rewritten with 2-space indents (every other key
    kept, in its order), TOML appended to as text, so the rest of the file stays as it was."""
    if path.suffix == ".toml":
        return (text or "") + "".join(_toml_table(client, name, entry) for name, entry in entries.items())
    document = client.read(text, path)
    document[client.section] = {**client.servers(document), **entries}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def without_entries(client: Client, path: Path, text: str, names: dict[str, Entry]) -> str:
    """The file's text with these entries (as they were written) removed, and nothing else."""
    if path.suffix == ".toml":
        for name, entry in names.items():
            text = text.replace(_toml_table(client, name, entry), "", 1)
        return text
    document = client.read(text, path)
    document[client.section] = {k: v for k, v in client.servers(document).items() if k not in names}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _toml_table(client: Client, name: str, entry: Entry) -> str:
    key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
    body = "".join(f"{field} = {json.dumps(value)}\n" for field, value in entry.items())
    return f"\n[{client.section}.{key}]\n{body}"
