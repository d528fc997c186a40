"""The one typed config model; loads mcpmesh.toml and the `mcpServers` JSON that clients use."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mcpmesh.errors import ConfigError

MiB = 1024 * 1024
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RestartPolicy(_Strict):
    """How a server that exits is brought back."""

    backoff_initial: float = Field(0.5, gt=0, description="first restart delay, seconds")
    backoff_max: float = Field(30.0, gt=0, description="longest restart delay, seconds")
    max_restarts: int = Field(5, ge=0, description="restarts allowed within `window` before `failed`")
    window: float = Field(60.0, gt=0, description="seconds over which restarts are counted")


class ServerConfig(_Strict):
    """One supervised stdio MCP server."""

    command: str = Field(min_length=1, description="program to run (argv[0]; never a shell line)")
    args: list[str] = Field(default_factory=list, description="arguments")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    inherit_env: list[str] = Field(
        default_factory=list, description="names passed through from mcpmesh's own environment"
    )
    cwd: Path | None = Field(None, description="working directory")
    sharing: Literal["shared", "session"] = Field(
        "shared", description="`shared`: one process, many sessions; `session`: one per session"
    )
    request_timeout: float = Field(300.0, gt=0, description="seconds before a request fails")
    startup_timeout: float = Field(60.0, gt=0, description="seconds to spawn and handshake")
    max_line_bytes: int = Field(16 * MiB, ge=1024, description="stdout lines above this are dropped")
    restart: RestartPolicy = Field(default_factory=RestartPolicy)  # type: ignore[arg-type]  # pydantic fills defaults

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"invalid environment variable name {name!r}")
        return env


class MeshSettings(_Strict):
    """The `[mesh]` table."""

    host: str = Field("127.0.0.1", description="listen address (loopback unless told otherwise)")
    port: int = Field(11090, ge=0, le=65535, description="main port: MCP endpoints and /healthz")
    state_dir: Path = Field(Path(".mcpmesh"), description="where state is kept")
    allowed_hosts: list[str] = Field(default_factory=list, description="Host names accepted besides loopback names")
    allowed_origins: list[str] = Field(default_factory=list, description="Origins accepted besides loopback origins")
    max_body_bytes: int = Field(4 * MiB, ge=1024, description="request bodies above this get 413")
    max_sessions: int = Field(1000, ge=1, description="client sessions held at once (excess: 503)")
    session_idle_timeout: float = Field(1800.0, gt=0, description="idle sessions end after this")
    keepalive_interval: float = Field(15.0, gt=0, description="seconds between SSE keep-alives")
    legacy_sse: bool = Field(True, description="also serve the 2024-11-05 HTTP+SSE transport at /servers/<name>/sse")


class MeshConfig(_Strict):
    mesh: MeshSettings = Field(default_factory=MeshSettings)  # type: ignore[arg-type]  # pydantic fills defaults
    servers: dict[str, ServerConfig] = Field(default_factory=dict)

    @field_validator("servers")
    @classmethod
    def _server_names(cls, servers: dict[str, ServerConfig]) -> dict[str, ServerConfig]:
        for name in servers:
            if not SERVER_NAME.match(name):
                raise ValueError(f"server name {name!r} must be 1-64 of [A-Za-z0-9_.-], starting alphanumeric")
        return servers


# Keys that the clients' `mcpServers` entries use and that mean nothing to a stdio server here.
_CLIENT_ONLY_KEYS = {"type", "description", "disabled", "autoApprove", "alwaysAllow", "timeout"}


def load_config(path: str | Path) -> MeshConfig:
    """Load and validate a config file; raise ConfigError naming file, key, line and problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text: {exc}") from exc
    raw = _parse_json(path, text) if _looks_like_json(path, text) else _parse_toml(path, text)
    return _validate(path, text, raw)


def _looks_like_json(path: Path, text: str) -> bool:
    return path.suffix.lower() == ".json" or text.lstrip().startswith("{")


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}") from exc


def _parse_json(path: Path, text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), f"invalid JSON: {exc.msg}", line=exc.lineno) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("mcpServers"), dict):
        raise ConfigError(str(path), 'expected an object with an "mcpServers" object', key="mcpServers")
    return {"servers": {name: _from_client_entry(path, name, e) for name, e in doc["mcpServers"].items()}}


def _from_client_entry(path: Path, name: str, entry: Any) -> dict[str, Any]:
    """Map one Claude Desktop / Claude Code / Cursor entry onto a ServerConfig table."""
    key = f"mcpServers.{name}"
    if not isinstance(entry, dict):
        raise ConfigError(str(path), "must be an object", key=key)
    if "url" in entry or entry.get("type") in {"http", "sse", "streamable-http"}:
        raise ConfigError(str(path), "remote (url) servers are not supported yet", key=key)
    return {k: v for k, v in entry.items() if k not in _CLIENT_ONLY_KEYS}


def _validate(path: Path, text: str, raw: dict[str, Any]) -> MeshConfig:
    try:
        return MeshConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        keys = [str(part) for part in first["loc"]]
        if path.suffix.lower() == ".json" and keys[:1] == ["servers"]:
            keys[0] = "mcpServers"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown setting"
        elif first["type"] == "missing":
            message = "required setting is missing"
        elif "input" in first and first["type"] != "missing":
            message += f" (got {first['input']!r})"
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(str(path), message, key=".".join(keys), line=_line_of(text, keys)) from exc


def _line_of(text: str, keys: list[str]) -> int | None:
    """Best-effort line number of the innermost key that exists in the file."""
    lines = text.splitlines()
    start, found = 0, None
    for key in keys:
        pattern = re.compile(rf"""^\s*\[*\s*(?:[\w."'-]+\.)?["']?{re.escape(key)}["']?\s*[\].=:]""")
        for index in range(start, len(lines)):
            if pattern.search(lines[index]) or f'"{key}"' in lines[index]:
                start, found = index + 1, index + 1
                break
    return found
