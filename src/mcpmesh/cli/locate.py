"""Where the running mesh is. `mcpmesh up` writes its address into state_dir (mesh.json) and takes
it away when it stops; the client commands find it from --url, $MCPMESH_URL, --config, or the
working directory and its parents, as git finds its repository."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mcpmesh.config import MeshConfig, load_config
from mcpmesh.errors import MeshNotFound

MESH_FILE = "mesh.json"
DEFAULT_CONFIG = "mcpmesh.toml"
DEFAULT_STATE_DIR = ".mcpmesh"
URL_VARIABLE = "MCPMESH_URL"


@dataclass(frozen=True)
class MeshAddress:
    """A mesh the commands can talk to, and how it was found (said when it does not answer)."""

    url: str
    found_by: str
    state_dir: Path | None = None  # where its registry lies, when known
    ports: str | None = None  # its dedicated-port range, when known


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine reaches a listener at (a wildcard bind by its loopback)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    return f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:{port}"


def announce(config: MeshConfig, config_path: str) -> Path:
    """Write where this mesh listens into its state_dir, for the commands run after it."""
    state_dir = Path(config.mesh.state_dir).resolve()
    record = {
        "url": base_url(config.mesh.host, config.mesh.port),
        "pid": os.getpid(),
        "config": str(Path(config_path).resolve()),
        "state_dir": str(state_dir),
        "ports": config.mesh.ports,
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / MESH_FILE
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)  # whole or not at all: a reader never sees half a file
    return path


def withdraw(path: Path) -> None:
    """Take the address away again: this mesh no longer listens."""
    with contextlib.suppress(FileNotFoundError):
        record = json.loads(path.read_text())
        if record.get("pid") == os.getpid():  # a newer mesh on this state_dir keeps its own
            path.unlink()


def locate(url: str | None, config_path: str | None, cwd: Path, *, on_disk: bool = False) -> MeshAddress:
    """The mesh to talk to: --url, else $MCPMESH_URL, else the running mesh of --config (or of the
    mcpmesh.toml or .mcpmesh/ found in cwd or a parent), else that config's host and port.
    on_disk: a mesh whose state_dir is known (URLs say nothing of where its registry lies)."""
    if url and not on_disk:
        return MeshAddress(url.rstrip("/"), "--url")
    if os.environ.get(URL_VARIABLE) and not on_disk:
        return MeshAddress(os.environ[URL_VARIABLE].rstrip("/"), f"${URL_VARIABLE}")
    if config_path is not None:
        return _from_config(Path(config_path), load_config(config_path))
    for directory in (cwd, *cwd.parents):
        running = _running(directory / DEFAULT_STATE_DIR / MESH_FILE)
        if running is not None:
            return running
        if (directory / DEFAULT_CONFIG).is_file():
            config_file = directory / DEFAULT_CONFIG
            return _from_config(config_file, load_config(str(config_file)))
    raise MeshNotFound(
        f"no running mesh found from {cwd} (no {DEFAULT_STATE_DIR}/{MESH_FILE} of a running mesh, "
        f"no {DEFAULT_CONFIG} here or above): start one with `mcpmesh up`, or give --url, "
        f"--config or ${URL_VARIABLE}"
    )


def _from_config(path: Path, config: MeshConfig) -> MeshAddress:
    """The running mesh of this config if its state_dir says so, else where the config says."""
    state_dir = Path(config.mesh.state_dir)
    if not state_dir.is_absolute():  # `up` resolves it against its working directory
        state_dir = Path.cwd() / state_dir
    running = _running(state_dir / MESH_FILE)
    if running is not None:
        return running
    url = base_url(config.mesh.host, config.mesh.port)
    return MeshAddress(url, f"{path}'s [mesh] host and port", state_dir, config.mesh.ports)


def _running(path: Path) -> MeshAddress | None:
    """The address in a mesh.json whose mesh is still alive; None when absent, stale or broken."""
    try:
        record = json.loads(path.read_text())
        url, pid = str(record["url"]), int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):  # the mesh was killed before it could take its address away
        return None
    state_dir = Path(record["state_dir"]) if record.get("state_dir") else path.parent
    return MeshAddress(url, str(path), state_dir, record.get("ports"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
