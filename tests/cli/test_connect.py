"""`mcpmesh connect|disconnect` on the clients whose file the mesh edits itself (Cursor, VS Code,
Claude Desktop, and Claude Code or Codex when their CLI is not installed), in a scratch HOME: each
file in its documented shape, the user's entries kept, a backup, --dry-run writing nothing, a
conflict refused, and disconnect giving back the very bytes. Desktop's entry is then run as
Desktop would: by the SDK's stdio client, with the command and arguments connect wrote."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcpmesh.cli.connections import atomic_write
from mcpmesh.cli.main import main
from tests.cli.test_stdio_bridge import answer_sampling
from tests.conftest import RunningMesh, everything_server, running_mesh, time_server

pytestmark = pytest.mark.anyio

MCPMESH = str((Path(sys.executable).parent / "mcpmesh").resolve())
USERS_JSON = (  # four-space indents and a key after the servers: a rewrite would not give these bytes back
    '{\n    "mcpServers": {\n        "mine": {"command": "npx", "args": ["-y", "my-server"]}\n    },\n'
    '    "theme": "dark"\n}\n'
)
USERS_VSCODE = '{\n\t"servers": {\n\t\t"mine": {"type": "stdio", "command": "my-server"}\n\t},\n\t"inputs": []\n}\n'
USERS_TOML = '# my settings\nmodel = "o3"\n\n[mcp_servers.mine]\ncommand = "npx"\nargs = ["-y", "my-server"]\n'


# client -> (its file under the scratch HOME, the user's file, the section, the entry for a URL)
FORMATS: dict[str, tuple[str, str, str, Callable[[str], dict[str, Any]]]] = {
    "cursor": (".cursor/mcp.json", USERS_JSON, "mcpServers", lambda url: {"url": url}),
    "vscode": (".config/Code/User/mcp.json", USERS_VSCODE, "servers", lambda url: {"type": "http", "url": url}),
    "claude-desktop": (
        ".config/Claude/claude_desktop_config.json",
        USERS_JSON,
        "mcpServers",
        lambda url: {"command": MCPMESH, "args": ["stdio", url]},
    ),
    "claude-code": (".claude.json", USERS_JSON, "mcpServers", lambda url: {"type": "http", "url": url}),
    "codex": (".codex/config.toml", USERS_TOML, "mcp_servers", lambda url: {"url": url}),
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scratch HOME, with no client CLI on PATH: connect edits the files itself."""
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "CODEX_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


async def mcpmesh(*args: str) -> int:
    """The command, run in a thread: it asks the mesh, which serves on this test's event loop."""
    return await anyio.to_thread.run_sync(main, list(args))


def document(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())


def backup_of(path: Path) -> Path:
    return path.with_name(path.name + ".mcpmesh-backup")


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def mesh_servers(mesh: RunningMesh) -> dict[str, str]:
    return {name: mesh.url(name) for name in ("time", "everything")}


@pytest.mark.parametrize("client", sorted(FORMATS))
async def test_connect_writes_the_documented_shape_keeps_the_users_entries_and_disconnect_restores_the_bytes(
    client: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relative, users, section, entry = FORMATS[client]
    path = home / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(users)
    original = document(path)
    async with running_mesh({"time": time_server(), "everything": everything_server()}) as mesh:
        url = ["--url", mesh.base_url]
        assert await mcpmesh("connect", client, "--dry-run", *url) == 0
        assert path.read_text() == users  # the dry run wrote nothing: no change, no backup, no record
        assert not backup_of(path).exists()
        assert not (home / ".local" / "state" / "mcpmesh").exists()
        assert f"would add time {json.dumps(entry(mesh.url('time')))}" in capsys.readouterr().out

        assert await mcpmesh("connect", client, *url) == 0
        expected = {**original, section: {**original[section], **{n: entry(u) for n, u in mesh_servers(mesh).items()}}}
        assert document(path) == expected
        assert backup_of(path).read_text() == users
        assert await mcpmesh("connect", client, *url) == 0  # again: nothing to add, nothing changes
        assert document(path) == expected
        assert "already points at every mesh server" in capsys.readouterr().out

        assert await mcpmesh("disconnect", client, "--dry-run") == 0
        assert document(path) == expected
        assert await mcpmesh("disconnect", client) == 0
    assert path.read_bytes() == users.encode()
    assert not backup_of(path).exists()


async def test_a_name_the_user_already_has_is_refused_by_name_and_nothing_is_written(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = home / ".cursor" / "mcp.json"
    path.parent.mkdir()
    users = '{"mcpServers": {"time": {"url": "https://example.com/my-own-time"}}}'
    path.write_text(users)
    async with running_mesh({"time": time_server(), "everything": everything_server()}) as mesh:
        assert await mcpmesh("connect", "cursor", "--url", mesh.base_url) == 1
    out = capsys.readouterr().out
    assert "'time'" in out and "someone else's" in out and "everything" not in out.split("nothing changed")[1]
    assert path.read_text() == users
    assert listing(path.parent) == ["mcp.json"]


async def test_a_file_connect_created_goes_with_its_folder_and_later_edits_by_the_user_stay(home: Path) -> None:
    path = home / ".config" / "Code" / "User" / "mcp.json"
    async with running_mesh({"time": time_server()}) as mesh:
        assert await mcpmesh("connect", "vscode", "--url", mesh.base_url) == 0
        assert json.loads(path.read_text()) == {"servers": {"time": {"type": "http", "url": mesh.url("time")}}}
        assert await mcpmesh("disconnect", "vscode") == 0
        assert not (home / ".config").exists()  # connect made ~/.config/Code/User: all of it goes

        assert await mcpmesh("connect", "vscode", "--url", mesh.base_url) == 0
        edited = json.loads(path.read_text())
        edited["servers"]["later"] = {"type": "stdio", "command": "later-server"}
        path.write_text(json.dumps(edited))
        assert await mcpmesh("disconnect", "vscode") == 0
    assert json.loads(path.read_text()) == {"servers": {"later": {"type": "stdio", "command": "later-server"}}}


async def test_workspace_vscode_and_all_reach_only_the_clients_found(home: Path) -> None:
    (home / ".cursor").mkdir()
    project = home / "project"
    project.mkdir()
    os.chdir(project)
    async with running_mesh({"time": time_server()}) as mesh:
        assert await mcpmesh("connect", "vscode", "--workspace", "--url", mesh.base_url) == 0
        assert json.loads((project / ".vscode" / "mcp.json").read_text())["servers"]["time"]["type"] == "http"
        assert await mcpmesh("connect", "cursor", "--workspace", "--url", mesh.base_url) == 0
        assert json.loads((project / ".cursor" / "mcp.json").read_text())["mcpServers"]["time"] == {
            "url": mesh.url("time")
        }
        assert await mcpmesh("connect", "--all", "--url", mesh.base_url) == 0
        cursor = json.loads((home / ".cursor" / "mcp.json").read_text())
        assert cursor == {"mcpServers": {"time": {"url": mesh.url("time")}}}
        assert listing(home) == [".cursor", ".local", "project"]  # no other client's file
        assert await mcpmesh("disconnect", "--all") == 0
        assert await mcpmesh("disconnect", "vscode", "--workspace") == 0
        assert await mcpmesh("disconnect", "cursor", "--workspace") == 0
    assert listing(home / ".cursor") == []
    assert listing(project) == []  # both project files, and the folders made for them, are gone


async def test_desktops_entry_runs_the_bridge_for_the_sdk_stdio_client(home: Path) -> None:
    path = home / ".config" / "Claude" / "claude_desktop_config.json"
    servers = {"time": time_server(), "everything": {**everything_server(), "sharing": "session"}}
    async with running_mesh(servers) as mesh:
        assert await mcpmesh("connect", "claude-desktop", "--url", mesh.base_url) == 0
        entries = json.loads(path.read_text())["mcpServers"]
        with anyio.fail_after(60), open(os.devnull, "w") as quiet:  # noqa: ASYNC230  # the bridge logs on stderr
            time_entry = StdioServerParameters(command=entries["time"]["command"], args=entries["time"]["args"])
            async with stdio_client(time_entry, errlog=quiet) as (read, write), ClientSession(read, write) as session:
                assert (await session.initialize()).server_info.name == "mcp-time"
                assert "get_current_time" in {t.name for t in (await session.list_tools()).tools}
                reply = await session.call_tool("get_current_time", {"timezone": "UTC"})
                assert '"timezone": "UTC"' in reply.content[0].text  # type: ignore[union-attr]
            everything = StdioServerParameters(
                command=entries["everything"]["command"], args=entries["everything"]["args"]
            )
            async with stdio_client(everything, errlog=quiet) as (read, write):
                async with ClientSession(read, write, sampling_callback=answer_sampling) as session:
                    await session.initialize()
                    reply = await session.call_tool("trigger-sampling-request", {"prompt": "from desktop"})
                    assert "sampled [Resource trigger-sampling-request context: from desktop]" in json.dumps(
                        [c.model_dump() for c in reply.content]
                    )


def test_a_symlinked_config_is_written_where_it_points_and_keeps_its_mode(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "mcp.json"
    real.parent.mkdir()
    real.write_text("{}")
    real.chmod(0o640)
    link = tmp_path / "mcp.json"
    link.symlink_to(real)
    atomic_write(link, '{"mcpServers": {}}\n')
    assert link.is_symlink() and real.read_text() == '{"mcpServers": {}}\n'
    assert real.stat().st_mode & 0o777 == 0o640
    assert listing(real.parent) == ["mcp.json"]  # no temporary file left beside it
