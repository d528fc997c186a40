"""`mcpmesh import`: realistic files of every client, in their standard places under a temp HOME
and project, made into one mesh config by the real CLI; and a mesh run on an imported Claude
Desktop file, called through with the SDK client."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import mcp
import pytest

from mcpmesh.cli import toml_text
from mcpmesh.config import ServerConfig, load_config
from mcpmesh.supervision.server import State
from tests.conftest import PYTHON, running_mesh, time_server

MCPMESH = str(Path(PYTHON).parent / "mcpmesh")
EXPANDED_SECRET = "ghp_EXPANDEDsecretValue0123456789"  # GITHUB_TOKEN's value: never in any output
LITERAL_SECRET = "sk-literal-0123456789abcdef"  # written in a client's file: kept in the file, never said
ENV_FILE_SECRET = "envfile-secret-0123456789"  # in a VS Code envFile: stays there


def write(path: Path, content: str | dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2), encoding="utf-8")
    return path


def run_import(home: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CODEX_HOME", "GITHUB_TOKEN")}
    environ |= {"HOME": str(home), "GITHUB_TOKEN": EXPANDED_SECRET, **env}
    argv = [MCPMESH, "import", *args]
    return subprocess.run(argv, cwd=cwd, env=environ, capture_output=True, text=True, timeout=60)


@pytest.fixture
def clients(tmp_path: Path) -> tuple[Path, Path]:
    """A HOME and a project holding every client's config, as each client writes it."""
    home, project = tmp_path / "home", tmp_path / "project"
    time = {"command": "uvx", "args": ["mcp-server-time", "--local-timezone", "UTC"]}
    write(
        home / ".config" / "Claude" / "claude_desktop_config.json",
        {
            "globalShortcut": "Ctrl+Space",
            "mcpServers": {
                "time": time,
                "brave-search": {
                    "command": "npx",
                    "args": ["-y", "@modelcontextprotocol/server-brave-search"],
                    "env": {"BRAVE_API_KEY": LITERAL_SECRET},
                },
                "puppeteer": {
                    "command": "npx",
                    "args": ["-y", "@modelcontextprotocol/server-puppeteer"],
                    "disabled": True,
                },
            },
        },
    )
    write(
        home / ".claude.json",
        {
            "numStartups": 12,
            "mcpServers": {"time": {"type": "stdio", **time, "env": {}}},  # the same server again
            "projects": {
                str(project): {
                    "allowedTools": [],
                    "mcpServers": {"notes": {"command": "notes-mcp", "env": {"NOTES_DIR": "${NOTES_DIR:-/tmp/notes}"}}},
                },
                "/elsewhere": {"mcpServers": {"other": {"command": "other-mcp"}}},  # not this project
            },
        },
    )
    write(
        project / ".mcp.json",
        {
            "mcpServers": {
                "github": {
                    "command": "npx",
                    "args": ["-y", "@modelcontextprotocol/server-github"],
                    "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"},
                },
                "team": {
                    "type": "http",
                    "url": "https://mcp.example.com/mcp",
                    "headers": {"Authorization": "Bearer ${GITHUB_TOKEN}", "X-Team": "core"},
                },
            }
        },
    )
    write(
        home / ".cursor" / "mcp.json",
        {
            "mcpServers": {
                "github": {"command": "docker", "args": ["run", "-i", "ghcr.io/github/github-mcp-server"]},  # conflict
                "context7": {"url": "https://mcp.context7.com/mcp", "headers": {"CONTEXT7_API_KEY": "${env:CTX7_KEY}"}},
            }
        },
    )
    write(
        project / ".vscode" / "mcp.json",
        {
            "inputs": [
                {"type": "promptString", "id": "perplexity-key", "description": "Perplexity API Key", "password": True}
            ],
            "servers": {
                "perplexity": {
                    "type": "stdio",
                    "command": "npx",
                    "args": ["-y", "server-perplexity-ask"],
                    "env": {"PERPLEXITY_API_KEY": "${input:perplexity-key}", "LOG_DIR": "${workspaceFolder}/logs"},
                    "envFile": "${workspaceFolder}/.env",
                },
                "legacy": {"type": "sse", "url": "http://127.0.0.1:9000/sse"},
            },
        },
    )
    write(project / ".env", f'# for perplexity\nPERPLEXITY_MODEL=sonar\nexport SEARCH_TOKEN="{ENV_FILE_SECRET}"\n')
    write(
        home / ".codex" / "config.toml",
        'model = "o4-mini"\n\n'
        '[mcp_servers.figma]\nurl = "https://mcp.figma.com/mcp"\n'
        'bearer_token_env_var = "FIGMA_TOKEN"\nenabled = false\n\n'
        '[mcp_servers.fetch]\ncommand = "uvx"\nargs = ["mcp-server-fetch"]\nenv_vars = ["HTTPS_PROXY"]\n'
        "tool_timeout_sec = 30\nstartup_timeout_sec = 20\n",
    )
    return home, project


def expected_servers(project: Path) -> dict[str, dict[str, Any]]:
    return {
        "github": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"},
            "secret_env": ["GITHUB_PERSONAL_ACCESS_TOKEN"],
        },
        "team": {
            "url": "https://mcp.example.com/mcp",
            "transport": "streamable-http",
            "headers": {"Authorization": "Bearer ${GITHUB_TOKEN}", "X-Team": "core"},
        },
        "context7": {
            "url": "https://mcp.context7.com/mcp",
            "transport": "streamable-http",
            "headers": {"CONTEXT7_API_KEY": "${CTX7_KEY}"},
        },
        "perplexity": {
            "command": "npx",
            "args": ["-y", "server-perplexity-ask"],
            "env": {
                "PERPLEXITY_API_KEY": "${PERPLEXITY_KEY}",
                "LOG_DIR": f"{project}/logs",
                "PERPLEXITY_MODEL": "${PERPLEXITY_MODEL}",
                "SEARCH_TOKEN": "${SEARCH_TOKEN}",
            },
            "secret_env": ["PERPLEXITY_API_KEY", "SEARCH_TOKEN"],
        },
        "legacy": {"url": "http://127.0.0.1:9000/sse", "transport": "sse"},
        "notes": {"command": "notes-mcp", "env": {"NOTES_DIR": "${NOTES_DIR:-/tmp/notes}"}},
        "time": {"command": "uvx", "args": ["mcp-server-time", "--local-timezone", "UTC"]},
        "brave-search": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-brave-search"],
            "env": {"BRAVE_API_KEY": LITERAL_SECRET},
            "secret_env": ["BRAVE_API_KEY"],
        },
        "puppeteer": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-puppeteer"], "enabled": False},
        "figma": {
            "url": "https://mcp.figma.com/mcp",
            "headers": {"Authorization": "Bearer ${FIGMA_TOKEN}"},
            "enabled": False,
        },
        "fetch": {
            "command": "uvx",
            "args": ["mcp-server-fetch"],
            "inherit_env": ["HTTPS_PROXY"],
            "startup_timeout": 20.0,
            "request_timeout": 30.0,
        },
    }


def test_every_clients_files_become_one_mesh_config_with_duplicates_merged_and_the_conflict_named(
    clients: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, project = clients
    done = run_import(home, project)
    assert done.returncode == 1, done.stderr  # a conflict
    written = project / "mcpmesh.toml"
    expected = expected_servers(project)
    assert tomllib.loads(written.read_text())["servers"] == expected
    for name in (
        "GITHUB_TOKEN",
        "CTX7_KEY",
        "PERPLEXITY_KEY",
        "PERPLEXITY_MODEL",
        "SEARCH_TOKEN",
    ):  # what the summary says to set
        monkeypatch.setenv(name, "x")
    monkeypatch.delenv("NOTES_DIR", raising=False)
    config = load_config(written)
    assert {n: s.model_dump() for n, s in config.servers.items()} == {
        n: ServerConfig.model_validate(t).model_dump() for n, t in expected.items()
    }
    check = subprocess.run([MCPMESH, "check-config", str(written)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    # Which files were read, the one conflict by name and file, what to set, and no secret anywhere.
    for place in (
        ".config/Claude/claude_desktop_config.json",
        ".claude.json",
        ".cursor/mcp.json",
        ".codex/config.toml",
    ):
        assert f"read {home / place}:" in done.stderr
    assert f"read {project / '.vscode' / 'mcp.json'}: 2 server(s)" in done.stderr
    conflicts = [line for line in done.stderr.splitlines() if line.startswith("conflict:")]
    assert len(conflicts) == 1, done.stderr
    assert f"server 'github' in {home / '.cursor' / 'mcp.json'} differs" in conflicts[0]
    assert f"kept from {project / '.mcp.json'}" in conflicts[0]
    assert (
        "set before `mcpmesh up`: CTX7_KEY, GITHUB_TOKEN, PERPLEXITY_KEY, PERPLEXITY_MODEL, SEARCH_TOKEN "
        "(unset now: CTX7_KEY, PERPLEXITY_KEY, PERPLEXITY_MODEL, SEARCH_TOKEN)" in done.stderr
    )
    assert "input 'perplexity-key' (Perplexity API Key)" in done.stderr
    assert "other" not in config.servers  # another project's server
    output = written.read_text() + done.stdout + done.stderr
    assert EXPANDED_SECRET not in output and ENV_FILE_SECRET not in output
    assert LITERAL_SECRET in written.read_text() and LITERAL_SECRET not in done.stdout + done.stderr
    assert written.stat().st_mode & 0o077 == 0  # it may hold the sources' literal secrets


def test_named_files_in_their_order_stdout_dry_run_and_no_overwrite_without_force(clients: tuple[Path, Path]) -> None:
    home, project = clients
    cursor, mcp_json = home / ".cursor" / "mcp.json", project / ".mcp.json"
    printed = run_import(home, project, "-o", "-", str(cursor), str(mcp_json))
    assert printed.returncode == 1, printed.stderr  # github: Cursor's first now, .mcp.json's the conflict
    servers = tomllib.loads(printed.stdout)["servers"]
    assert list(servers) == ["github", "context7", "team"]
    assert servers["github"]["command"] == "docker"
    assert f"server 'github' in {mcp_json} differs" in printed.stderr
    assert not (project / "mcpmesh.toml").exists()
    assert EXPANDED_SECRET not in printed.stdout + printed.stderr

    alone = run_import(home, project, str(mcp_json))
    assert alone.returncode == 0, alone.stderr
    before = (project / "mcpmesh.toml").read_bytes()
    refused = run_import(home, project, str(cursor))
    assert refused.returncode == 2 and "exists; pass --force" in refused.stderr
    dry = run_import(home, project, "--dry-run", str(cursor))
    assert dry.returncode == 0 and "would write mcpmesh.toml: 2 server(s)" in dry.stderr
    assert (project / "mcpmesh.toml").read_bytes() == before
    forced = run_import(home, project, "--force", str(cursor))
    assert forced.returncode == 0, forced.stderr
    assert list(tomllib.loads((project / "mcpmesh.toml").read_text())["servers"]) == ["github", "context7"]


def test_entries_that_cannot_be_mesh_servers_are_named_and_the_rest_imported(tmp_path: Path) -> None:
    source = write(
        tmp_path / "mcp.json",
        {
            "mcpServers": {
                "fine": {"command": "fine-mcp"},
                "my server!": {"command": "spaced-mcp"},
                "nothing": {"args": ["-y"]},
                "creds": {"url": "https://user:pw@example.com/mcp"},
                "argref": {"command": "x", "args": ["--token", "${GITHUB_TOKEN}"]},
            }
        },
    )
    done = run_import(tmp_path, tmp_path, "-o", "-", str(source), str(tmp_path / "missing.json"))
    assert done.returncode == 1
    servers = tomllib.loads(done.stdout)["servers"]
    assert servers == {
        "fine": {"command": "fine-mcp"},
        "my-server-": {"command": "spaced-mcp"},
        "argref": {"command": "x", "args": ["--token", "${GITHUB_TOKEN}"], "enabled": False},
    }
    assert "renamed from 'my server!'" in done.stderr
    assert f"error: {source}: nothing: neither `command` nor `url` (not imported)" in done.stderr
    assert f"error: {source}: creds: url: credentials do not belong in the URL" in done.stderr
    assert "args hold ${NAME}, which mcpmesh expands only in env and headers" in done.stderr
    assert f"error: {tmp_path / 'missing.json'}: cannot read" in done.stderr
    assert "user:pw" not in done.stderr


def test_with_no_client_config_anywhere_it_says_where_it_looked(tmp_path: Path) -> None:
    done = run_import(tmp_path / "home", tmp_path)
    assert done.returncode == 2
    assert f"no MCP client config found (looked for {tmp_path / '.mcp.json'}" in done.stderr
    assert not (tmp_path / "mcpmesh.toml").exists()


@pytest.mark.anyio
async def test_an_imported_claude_desktop_file_runs_in_a_mesh_and_its_disabled_entry_never_starts(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "spawned"
    time = time_server(prefer_era="handshake")
    desktop = {
        "mcpServers": {
            "time": {"command": time["command"], "args": time["args"], "env": time["env"]},
            "off": {"command": "sh", "args": ["-c", f"touch {marker}; exec sleep 30"], "disabled": True},
        }
    }
    home = tmp_path / "home"
    write(home / ".config" / "Claude" / "claude_desktop_config.json", desktop)
    done = run_import(home, tmp_path)
    assert done.returncode == 0, done.stderr
    config = load_config(tmp_path / "mcpmesh.toml")
    servers = {name: server.model_dump(exclude_unset=True) for name, server in config.servers.items()}
    async with running_mesh(servers) as mesh:
        off = mesh.mesh.supervisor.servers["off"]
        assert off.state == State.STOPPED and off.reason == "disabled in the config (enabled = false)"
        async with mcp.Client(mesh.url("time"), mode="legacy") as client:
            reply = await client.call_tool("get_current_time", {"timezone": "UTC"})
            assert '"timezone": "UTC"' in reply.content[0].text  # type: ignore[union-attr]
        assert off.state == State.STOPPED
    assert not marker.exists(), "the disabled server was spawned"


def test_the_toml_writer_reads_back_exactly_what_it_was_given_however_odd() -> None:
    odd = 'quote " back \\ tab \t nl \n cr \r nul \0 esc \x1b del \x7f é 😀 ${X}'
    servers = {
        "a.b c": {"command": odd, "args": [odd, ""], "enabled": False, "startup_timeout": 2.5},
        "plain": {"command": "x", "env": {"K.with dot": odd, "PLAIN": "v"}, "headers": {}},
    }
    text = toml_text.server_tables(servers, {"a.b c": [f"from {odd}"]})
    read = tomllib.loads(text)["servers"]
    assert read == {"a.b c": servers["a.b c"], "plain": {"command": "x", "env": servers["plain"]["env"]}}
