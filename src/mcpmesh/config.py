"""The one typed config model; loads mcpmesh.toml and the `mcpServers` JSON that clients use."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mcpmesh.errors import ConfigError, HeaderError
from mcpmesh.registry.ports import PortRange

MiB = 1024 * 1024
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an RFC 9110 token
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
"""`${NAME}`, or `${NAME:-default}` (the default when NAME is unset or empty), as Claude Code writes them."""
RESERVED_HEADERS = frozenset(
    {"accept", "content-type", "content-length", "host", "mcp-session-id", "mcp-protocol-version", "mcp-method"}
    | {"mcp-name", "last-event-id", "transfer-encoding", "connection"}
)
"""Headers the remote connection sets itself, per request; configuring them would corrupt the protocol."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RestartPolicy(_Strict):
    """How a server that exits is brought back."""

    backoff_initial: float = Field(0.5, gt=0, description="first restart delay, seconds")
    backoff_max: float = Field(30.0, gt=0, description="longest restart delay, seconds")
    max_restarts: int = Field(5, ge=0, description="restarts allowed within `window` before `failed`")
    window: float = Field(60.0, gt=0, description="seconds over which restarts are counted")


class ServerConfig(_Strict):
    """One MCP server: a local stdio `command` mcpmesh supervises, or a remote `url` it connects to."""

    command: str | None = Field(None, min_length=1, description="program to run (argv[0]; never a shell line)")
    url: str | None = Field(None, description="a remote server's MCP endpoint (http:// or https://)")
    transport: Literal["streamable-http", "sse"] = Field(
        "streamable-http", description="how to reach `url`: Streamable HTTP, or the 2024-11-05 HTTP+SSE transport"
    )
    # Values may hold secrets (expanded from ${NAME}): kept out of every repr.
    headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="HTTP headers sent to `url`; ${NAME} expands from the environment"
    )
    args: list[str] = Field(default_factory=list, description="arguments")
    env: dict[str, str] = Field(
        default_factory=dict, description="extra environment variables; ${NAME} expands from the environment"
    )
    inherit_env: list[str] = Field(
        default_factory=list, description="names passed through from mcpmesh's own environment"
    )
    secret_env: list[str] = Field(
        default_factory=list, description="names in `env` or `inherit_env` whose values are masked in logs"
    )
    cwd: Path | None = Field(None, description="working directory")
    sharing: Literal["shared", "session"] = Field(
        "shared", description="`shared`: one process, many sessions; `session`: one per session"
    )
    prefer_era: Literal["handshake", "2026-07-28"] = Field(
        "handshake", description="the era a server that speaks both is spoken to in"
    )
    request_timeout: float = Field(300.0, gt=0, description="seconds before a request fails")
    startup_timeout: float = Field(60.0, gt=0, description="seconds to spawn and handshake")
    max_line_bytes: int = Field(16 * MiB, ge=1024, description="stdout lines above this are dropped")
    restart: RestartPolicy = Field(default_factory=RestartPolicy)  # type: ignore[arg-type]  # pydantic fills defaults
    dedicated_port: bool | None = Field(None, description="also listen on a port of its own (default: [mesh])")
    health_interval: float = Field(10.0, gt=0, description="seconds between active MCP probes (ping / server/discover)")
    catalog_interval: float = Field(
        300.0, gt=0, description="seconds between re-reads of lists the server did not announce as changed"
    )
    health_timeout: float = Field(5.0, gt=0, description="seconds a probe may take before it counts as a miss")
    optional: bool = Field(False, description="/readyz does not wait for this server")
    enabled: bool = Field(True, description="false: listed as stopped and not started (until `mcpmesh start`)")
    breaker_threshold: int = Field(5, ge=1, description="client requests timing out in a row that open the circuit")
    breaker_cooldown: float = Field(30.0, gt=0, description="seconds an open circuit refuses requests before a trial")
    max_processes: int = Field(
        32, ge=1, description="processes it may have at once (session mode: one per session and 2026-07-28 request)"
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"invalid environment variable name {name!r}")
        return env

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
            raise ValueError("must be an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials do not belong in the URL: put them in `headers`")
        return url

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if not HEADER_NAME.match(name):
                raise _at(name, f"{name!r} is not a valid HTTP header name")
            if name.lower() in RESERVED_HEADERS:
                raise _at(name, "this header is set by mcpmesh itself")
        return headers

    @model_validator(mode="after")
    def _local_or_remote(self) -> ServerConfig:
        if self.command is None and self.url is None:
            raise _at("command", "required setting is missing: a server needs `command` (local) or `url` (remote)")
        if self.command is not None and self.url is not None:
            raise _at("url", "a server has either `command` (local) or `url` (remote), not both")
        for name in self.secret_env:
            if name not in self.env and name not in self.inherit_env:
                raise _at("secret_env", f"{name} is neither in `env` nor in `inherit_env`")
        if self.command is not None:
            for key in ("transport", "headers"):
                if key in self.model_fields_set:
                    raise _at(key, "applies only to remote (`url`) servers")
        elif "max_processes" in self.model_fields_set:
            raise _at("max_processes", "applies only to local (`command`) servers: a remote one has no processes")
        if self.enabled:  # a missing variable is an error at startup, not at first use; none for a server off
            self._check_references()
        return self

    def _check_references(self) -> None:
        for name, template in self.env.items():
            if missing := unset_references(template):
                raise _at("env", f"environment variable {missing[0]} is not set", name)
        for name, template in self.headers.items():
            try:
                expand_header(name, template)
            except HeaderError as exc:
                raise _at("headers", exc.problem, name) from None


def expand_references(template: str, environ: Mapping[str, str] | None = None) -> str:
    """`template` with each `${NAME}` (or `${NAME:-default}`) taken from the environment; a
    variable unset and without default raises KeyError naming it. The result may be a secret:
    never log it, and never put it in an error message."""
    environ = os.environ if environ is None else environ

    def variable(match: re.Match[str]) -> str:
        name, default = match.groups()
        if default is not None and not environ.get(name):
            return default
        return environ[name]

    return ENV_REFERENCE.sub(variable, template)


def unset_references(template: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The variables `template` refers to that are unset and have no default."""
    environ = os.environ if environ is None else environ
    found = ((m.group(1), m.group(2)) for m in ENV_REFERENCE.finditer(template))
    return [name for name, default in found if default is None and name not in environ]


def expand_env(env: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A server's `env` with its `${NAME}` references expanded (the values may be secrets)."""
    return {name: expand_references(value, environ) for name, value in env.items()}


def expand_header(name: str, template: str, environ: Mapping[str, str] | None = None) -> str:
    """A header value with each `${NAME}` taken from the environment. The result may be a secret:
    never log it, and never put it in an error message."""
    try:
        value = expand_references(template, environ)
    except KeyError as exc:
        raise HeaderError(name, f"environment variable {exc.args[0]} is not set") from None
    if not all(c == "\t" or " " <= c <= "~" for c in value):
        raise HeaderError(
            name, "the value (after expansion) must be printable ASCII: no line breaks or control characters"
        )
    return value


def _at(key: str, problem: str, *inner: str) -> PydanticCustomError:
    """A validation error about `key` (and `inner` keys within it) inside the model being validated
    (the loader appends them to the path)."""
    return PydanticCustomError("mesh_setting", "{problem}", {"problem": problem, "key": [key, *inner]})


class MeshSettings(_Strict):
    """The `[mesh]` table."""

    host: str = Field("127.0.0.1", description="listen address (loopback unless told otherwise)")
    port: int = Field(11090, ge=0, le=65535, description="main port: MCP endpoints and /healthz")
    state_dir: Path = Field(Path(".mcpmesh"), description="where state is kept")
    allowed_hosts: list[str] = Field(default_factory=list, description="Host names accepted besides loopback names")
    allowed_origins: list[str] = Field(default_factory=list, description="Origins accepted besides loopback origins")
    max_body_bytes: int = Field(4 * MiB, ge=1024, description="request bodies above this get 413")
    max_sessions: int = Field(1000, ge=1, description="client sessions held at once (excess: 503)")
    body_timeout: float = Field(
        30.0, gt=0, description="seconds a request's head and body may take to arrive (then 408)"
    )
    max_connections: int = Field(
        512, ge=1, description="HTTP connections open at once, SSE streams included (excess: 503)"
    )
    max_connections_per_client: int = Field(
        256, ge=1, description="HTTP connections open at once from one client address (excess: 503)"
    )
    session_idle_timeout: float = Field(1800.0, gt=0, description="idle sessions end after this")
    session_process_idle_timeout: float = Field(
        300.0, gt=0, description='idle sessions of `sharing = "session"` servers end after this, and their processes'
    )
    keepalive_interval: float = Field(15.0, gt=0, description="seconds between SSE keep-alives")
    legacy_sse: bool = Field(True, description="also serve the 2024-11-05 HTTP+SSE transport at /servers/<name>/sse")
    stateless_requests: bool = Field(
        True, description="answer 2026-07-28 requests (false: a plain 400 sends clients to the handshake)"
    )
    ports: str = Field("11100-11199", description="the pool dedicated ports come from (inclusive range)")
    dedicated_ports: bool = Field(False, description="give every server its own port (servers may override)")
    port_release_grace: float = Field(600.0, ge=0, description="seconds a released port rests before reuse")
    event_retention: int = Field(10_000, ge=100, description="events kept in the registry's log")
    inherit_env: list[str] = Field(
        default_factory=list, description="names every server gets from mcpmesh's environment, besides the allow-list"
    )

    @field_validator("ports")
    @classmethod
    def _port_range(cls, ports: str) -> str:
        PortRange.parse(ports)  # raises ValueError saying what is wrong
        return ports

    @property
    def port_range(self) -> PortRange:
        return PortRange.parse(self.ports)


class MeshConfig(_Strict):
    mesh: MeshSettings = Field(default_factory=MeshSettings)  # type: ignore[arg-type]  # pydantic fills defaults
    servers: dict[str, ServerConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _mesh_wide_inherit_env(self) -> MeshConfig:
        """[mesh] inherit_env becomes part of every server's own, so a change to it restarts them."""
        if not self.mesh.inherit_env:
            return self
        servers = {
            name: server.model_copy(
                update={"inherit_env": list(dict.fromkeys([*self.mesh.inherit_env, *server.inherit_env]))}
            )
            for name, server in self.servers.items()
        }
        object.__setattr__(self, "servers", servers)  # frozen: set once, while validating
        return self

    @field_validator("servers")
    @classmethod
    def _server_names(cls, servers: dict[str, ServerConfig]) -> dict[str, ServerConfig]:
        for name in servers:
            if not SERVER_NAME.match(name):
                raise ValueError(f"server name {name!r} must be 1-64 of [A-Za-z0-9_.-], starting alphanumeric")
        return servers

    def wants_dedicated_port(self, name: str) -> bool:
        own = self.servers[name].dedicated_port
        return self.mesh.dedicated_ports if own is None else own


# Keys that the clients' `mcpServers` entries use and that mean nothing here.
_CLIENT_ONLY_KEYS = {"type", "description", "disabled", "autoApprove", "alwaysAllow", "timeout"}
# The clients' `type` values, as a `transport` (None: a local stdio server).
_CLIENT_TYPES = {"stdio": None, "http": "streamable-http", "streamable-http": "streamable-http"}
_CLIENT_TYPES |= {"streamableHttp": "streamable-http", "sse": "sse"}


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
    entries = doc["mcpServers"].items()
    return {"servers": {name: _from_client_entry(path, name, e) for name, e in entries}}


def _from_client_entry(path: Path, name: str, entry: Any) -> dict[str, Any]:
    """Map one Claude Desktop / Claude Code / Cursor entry onto a ServerConfig table."""
    key = f"mcpServers.{name}"
    if not isinstance(entry, dict):
        raise ConfigError(str(path), "must be an object", key=key)
    kind = entry.get("type")
    if kind is not None and (not isinstance(kind, str) or kind not in _CLIENT_TYPES):
        raise ConfigError(
            str(path), f"unknown server type {kind!r} (expected one of {', '.join(_CLIENT_TYPES)})", key=f"{key}.type"
        )
    table = {k: v for k, v in entry.items() if k not in _CLIENT_ONLY_KEYS}
    if entry.get("disabled") is True:  # switched off in the client: the mesh lists it, stopped
        table["enabled"] = False
    transport = None if kind is None else _CLIENT_TYPES[kind]
    if "url" in entry and transport is not None:
        table["transport"] = transport
    return table


def _validate(path: Path, text: str, raw: dict[str, Any]) -> MeshConfig:
    try:
        return MeshConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        keys = [str(part) for part in first["loc"]]
        if first["type"] == "mesh_setting":
            keys += first["ctx"]["key"]
        if path.suffix.lower() == ".json" and keys[:1] == ["servers"]:
            keys[0] = "mcpServers"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown setting"
        elif first["type"] == "missing":
            message = "required setting is missing"
        # A header's value may be a secret, so it is never echoed.
        elif "input" in first and first["type"] not in ("missing", "mesh_setting") and "headers" not in keys:
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
