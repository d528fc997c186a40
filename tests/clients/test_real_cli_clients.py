"""The real Claude Code and Codex CLIs (npm, pinned in tools/), pointed at a real mesh by `mcpmesh
connect` through their own `mcp add`, in a scratch HOME that already holds one server of the user's:
`claude mcp list` shows every mesh server connected, `codex mcp list` names each with the mesh's
URL, and `mcpmesh disconnect` gives both files back byte for byte. No API key is needed for these."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from mcpmesh.cli.main import main
from tests.conftest import NODE_MODULES, everything_server, node_module, running_mesh, time_server

pytestmark = [pytest.mark.anyio, pytest.mark.node]

QUIET = {  # documented switches: no update check, no telemetry or error reports, no traffic beyond the servers
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}
USERS_OWN = "http://127.0.0.1:9/mcp"  # the user's own server, which answers nothing (port 9 is discard)
USERS_TOML = f'# mine\nmodel = "o3"\n\n[mcp_servers.mine]\nurl = "{USERS_OWN}"\n'


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch HOME for the CLIs and for mcpmesh's record; the CLIs first on PATH."""
    for cli in ("claude", "codex"):
        node_module(".bin", cli)
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / ".codex"))
    monkeypatch.setenv("PATH", f"{NODE_MODULES / '.bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    for name, value in QUIET.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def run(*args: str) -> str:
    done = await anyio.run_process(list(args), check=False)
    assert done.returncode == 0, (args, done.stdout.decode(), done.stderr.decode())
    return done.stdout.decode()


async def mcpmesh(*args: str) -> int:
    return await anyio.to_thread.run_sync(main, list(args))  # in a thread: the mesh serves on this loop


def servers() -> dict[str, dict[str, object]]:
    return {"time": time_server(), "everything": everything_server()}


def line_of(listing: str, name: str) -> str:
    lines = [line for line in listing.splitlines() if line.startswith(f"{name}:") or line.split()[:1] == [name]]
    assert len(lines) == 1, listing
    return lines[0]


async def test_claude_code_lists_every_mesh_server_connected_and_disconnect_gives_the_file_back(home: Path) -> None:
    config = home / ".claude.json"
    # A Claude Code in use: the user's own server, and a first `mcp list` (which records a userID).
    await run("claude", "mcp", "add", "--transport", "http", "--scope", "user", "mine", USERS_OWN)
    await run("claude", "mcp", "list")
    before = config.read_bytes()
    async with running_mesh(servers()) as mesh:
        with anyio.fail_after(60):
            assert await mcpmesh("connect", "claude-code", "--url", mesh.base_url) == 0
            entries = json.loads(config.read_text())["mcpServers"]
            for name in ("time", "everything"):
                assert entries[name] == {"type": "http", "url": mesh.url(name)}
            listing = await run("claude", "mcp", "list")
            for name in ("time", "everything"):
                assert line_of(listing, name) == f"{name}: {mesh.url(name)} (HTTP) - ✔ Connected", listing
            assert "✔" not in line_of(listing, "mine")  # the user's own server is still there, as it was
            assert await mcpmesh("disconnect", "claude-code") == 0
    assert config.read_bytes() == before


async def test_codex_lists_every_mesh_server_with_its_url_and_disconnect_gives_the_file_back(home: Path) -> None:
    config = home / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text(USERS_TOML)
    async with running_mesh(servers()) as mesh:
        with anyio.fail_after(60):
            assert await mcpmesh("connect", "codex", "--url", mesh.base_url) == 0
            listing = await run("codex", "mcp", "list")
            for name in ("time", "everything", "mine"):
                url = mesh.url(name) if name != "mine" else USERS_OWN
                assert line_of(listing, name).split()[:2] == [name, url], listing
            described = {s["name"]: s["transport"] for s in json.loads(await run("codex", "mcp", "list", "--json"))}
            assert described["time"]["type"] == "streamable_http" and described["time"]["url"] == mesh.url("time")
            assert await mcpmesh("disconnect", "codex") == 0
    assert config.read_text() == USERS_TOML
