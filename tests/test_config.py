"""Config loading: mcpmesh.toml, the clients' mcpServers JSON, and errors that say where and what."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcpmesh.config import load_config
from mcpmesh.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mcpmesh.toml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_issue_example_toml_loads_with_its_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mcpmesh.toml",
        """
[mesh]
host = "127.0.0.1"
port = 11090
state_dir = ".mcpmesh"

[servers.time]
command = "mcp-server-time"
args = ["--local-timezone", "UTC"]
env = { TZ = "UTC" }
sharing = "shared"
""",
    )
    config = load_config(path)
    assert config.mesh.host == "127.0.0.1" and config.mesh.port == 11090
    time = config.servers["time"]
    assert (time.command, time.args, time.env, time.sharing) == (
        "mcp-server-time",
        ["--local-timezone", "UTC"],
        {"TZ": "UTC"},
        "shared",
    )


def test_defaults_bind_loopback_and_share_processes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "m.toml", '[servers.a]\ncommand = "x"\n'))
    assert config.mesh.host == "127.0.0.1"
    assert config.servers["a"].sharing == "shared"
    assert config.servers["a"].max_line_bytes == 16 * 1024 * 1024


def test_claude_desktop_json_is_accepted_unchanged(tmp_path: Path) -> None:
    text = """{
  "globalShortcut": "Ctrl+Space",
  "mcpServers": {
    "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
    "everything": {"type": "stdio", "command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything"]}
  }
}"""
    config = load_config(write(tmp_path, "claude_desktop_config.json", text))
    assert config.servers["time"].args == ["mcp-server-time"]
    assert config.servers["everything"].command == "npx"


def test_claude_code_mcp_json_without_json_suffix_is_detected(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ".mcp", '{"mcpServers": {"t": {"command": "mcp-server-time"}}}'))
    assert list(config.servers) == ["t"]


@pytest.mark.parametrize(
    ("name", "text", "key", "line", "problem"),
    [
        ("a.toml", '[servers.x]\ncommand = "a"\nsharing = "bogus"\n', "servers.x.sharing", 3, "'shared' or 'session'"),
        ("b.toml", '[servers.x]\ncommand = "a"\nargz = []\n', "servers.x.argz", 3, "unknown setting"),
        ("c.toml", "[servers.x]\nargs = []\n", "servers.x.command", 1, "required setting is missing"),
        ("d.toml", '[mesh]\nport = "high"\n[servers.x]\ncommand = "a"\n', "mesh.port", 2, "valid integer"),
        ("e.toml", '[servers."bad name!"]\ncommand = "a"\n', "servers", 1, "must be 1-64"),
        ("f.json", '{"mcpServers": {"t": {"command": "a", "envFile": ".env"}}}', "mcpServers.t.envFile", 1, "unknown"),
        ("g.json", '{"mcpServers": {"r": {"url": "https://example.com/mcp"}}}', "mcpServers.r", None, "remote"),
    ],
)
def test_broken_files_name_the_file_key_line_and_problem(
    tmp_path: Path, name: str, text: str, key: str, line: int | None, problem: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    err = caught.value
    assert (err.path, err.key, err.line) == (str(path), key, line)
    assert problem in err.problem
    assert str(err).startswith(f"{path}:")


def test_syntax_errors_say_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid TOML: .*line 2"):
        load_config(write(tmp_path, "s.toml", "[mesh]\nport = = 1\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "s.json", '{\n  "mcpServers": {\n    "a": }\n}'))
    assert caught.value.line == 3


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_check_config_cli_exits_0_on_the_example_and_1_naming_the_problem(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "mcpmesh", "check-config", str(EXAMPLE)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "OK, 2 server(s)" in ok.stdout
    bad = write(tmp_path, "bad.toml", '[servers.x]\ncommand = "a"\nsharing = "bogus"\n')
    fail = subprocess.run([sys.executable, "-m", "mcpmesh", "check-config", str(bad)], capture_output=True, text=True)
    assert fail.returncode == 1
    assert f"{bad}:3: servers.x.sharing" in fail.stderr


def test_up_refuses_a_broken_config_before_starting_anything(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.toml", '[servers.good]\ncommand = "sleep"\nargs = ["100"]\n[servers.x]\nsharing = 1\n')
    run = subprocess.run(
        [sys.executable, "-m", "mcpmesh", "up", "--config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 1
    assert "servers.x" in run.stderr
    assert "spawned" not in run.stderr
