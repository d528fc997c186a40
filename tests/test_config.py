"""Config loading: mcpmesh.toml, the clients' mcpServers JSON, and errors that say where and what."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcpmesh.config import expand_env, expand_header, load_config, unset_references
from mcpmesh.errors import ConfigError
from mcpmesh.observe.redact import Redactor

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


def test_disabled_entries_of_the_clients_json_are_kept_switched_off(tmp_path: Path) -> None:
    text = """{"mcpServers": {
  "on": {"command": "mcp-server-time"},
  "off": {"command": "mcp-server-time", "disabled": true},
  "said_no_but_not_a_boolean": {"command": "mcp-server-time", "disabled": "yes"}
}}"""
    config = load_config(write(tmp_path, "mcp.json", text))
    assert {name: server.enabled for name, server in config.servers.items()} == {
        "on": True,
        "off": False,
        "said_no_but_not_a_boolean": True,
    }


def test_a_server_is_switched_off_with_enabled_false(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "m.toml", '[servers.a]\ncommand = "x"\n[servers.b]\ncommand = "x"\nenabled = false\n')
    )
    assert (config.servers["a"].enabled, config.servers["b"].enabled) == (True, False)


def test_env_values_expand_references_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPMESH_TEST_TOKEN", "s3cret")
    monkeypatch.delenv("MCPMESH_TEST_UNSET", raising=False)
    env = {
        "TOKEN": "${MCPMESH_TEST_TOKEN}",
        "BEARER": "Bearer ${MCPMESH_TEST_TOKEN}!",
        "FALLBACK": "${MCPMESH_TEST_UNSET:-https://example.com}",
        "EMPTY_DEFAULT": "${MCPMESH_TEST_UNSET:-}",
        "SET_WINS": "${MCPMESH_TEST_TOKEN:-unused}",
        "LITERAL": "$MCPMESH_TEST_TOKEN",
    }
    assert expand_env(env) == {
        "TOKEN": "s3cret",
        "BEARER": "Bearer s3cret!",
        "FALLBACK": "https://example.com",
        "EMPTY_DEFAULT": "",
        "SET_WINS": "s3cret",
        "LITERAL": "$MCPMESH_TEST_TOKEN",
    }
    assert unset_references("${MCPMESH_TEST_UNSET} ${MCPMESH_TEST_UNSET:-x} ${MCPMESH_TEST_TOKEN}") == [
        "MCPMESH_TEST_UNSET"
    ]


def test_an_env_reference_to_an_unset_variable_is_an_error_naming_server_key_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MCPMESH_TEST_UNSET", raising=False)
    path = write(tmp_path, "m.toml", '[servers.gh]\ncommand = "x"\nenv = { GITHUB_TOKEN = "${MCPMESH_TEST_UNSET}" }\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "servers.gh.env.GITHUB_TOKEN"
    assert "environment variable MCPMESH_TEST_UNSET is not set" in str(caught.value)
    assert str(caught.value).startswith(f"{path}:3:")


def test_a_spawned_server_gets_its_env_references_expanded_and_their_values_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPMESH_TEST_TOKEN", "s3cret-value")
    config = load_config(
        write(
            tmp_path,
            "m.toml",
            '[servers.a]\ncommand = "x"\nenv = { T = "tok-${MCPMESH_TEST_TOKEN}" }\nsecret_env = ["T"]\n',
        )
    )
    assert config.servers["a"].env == {"T": "tok-${MCPMESH_TEST_TOKEN}"}  # kept as written
    redact = Redactor.from_config(config)
    assert redact("saw tok-s3cret-value and s3cret-value") == "saw *** and ***"


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
        (
            "g.json",
            '{"mcpServers": {"r": {"url": "https://e.com/mcp", "command": "a"}}}',
            "mcpServers.r.url",
            1,
            "not both",
        ),
        ("h.toml", '[servers.x]\nurl = "https://e.com/mcp"\ncommand = "a"\n', "servers.x.url", 2, "not both"),
        ("i.toml", '[servers.x]\nurl = "ftp://e.com/mcp"\n', "servers.x.url", 2, "http:// or https://"),
        ("j.toml", '[servers.x]\ncommand = "a"\ntransport = "sse"\n', "servers.x.transport", 3, "only to remote"),
        ("k.toml", '[servers.x]\nurl = "https://u:p@e.com/"\n', "servers.x.url", 2, "put them in `headers`"),
        ("o.toml", '[servers.x]\nurl = "https://e.com/"\nmax_processes = 4\n', "servers.x.max_processes", 3, "local"),
        ("p.toml", '[servers.x]\ncommand = "a"\nmax_processes = 0\n', "servers.x.max_processes", 3, "greater than"),
        ("l.json", '{"mcpServers": {"r": {"type": "ws", "url": "wss://e.com"}}}', "mcpServers.r.type", None, "unknown"),
        (
            "m.toml",
            '[servers.x]\nurl = "https://e.com/mcp"\nheaders = { Authorization = "Bearer ${MCPMESH_UNSET_VAR}" }\n',
            "servers.x.headers.Authorization",
            3,
            "environment variable MCPMESH_UNSET_VAR is not set",
        ),
        (
            "n.toml",
            '[servers.x]\nurl = "https://e.com/mcp"\nheaders = { Mcp-Session-Id = "1" }\n',
            "servers.x.headers.Mcp-Session-Id",
            3,
            "set by mcpmesh",
        ),
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


def test_remote_servers_in_toml_take_a_url_a_transport_and_headers_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPMESH_TEST_TOKEN", "s3cret")
    text = """
[servers.api]
url = "https://mcp.example.com/mcp"
headers = { Authorization = "Bearer ${MCPMESH_TEST_TOKEN}", X-Team = "blue" }
sharing = "session"

[servers.old]
url = "https://old.example.com/sse"
transport = "sse"
"""
    config = load_config(write(tmp_path, "r.toml", text))
    api, old = config.servers["api"], config.servers["old"]
    assert (api.command, api.url, api.transport, api.sharing) == (
        None,
        "https://mcp.example.com/mcp",
        "streamable-http",
        "session",
    )
    assert api.headers == {
        "Authorization": "Bearer ${MCPMESH_TEST_TOKEN}",
        "X-Team": "blue",
    }  # expanded when connecting
    assert expand_header("Authorization", api.headers["Authorization"]) == "Bearer s3cret"
    assert (old.url, old.transport) == ("https://old.example.com/sse", "sse")


def test_remote_entries_of_the_clients_json_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPMESH_TEST_TOKEN", "s3cret")
    text = """{"mcpServers": {
  "http": {"type": "http", "url": "https://e.com/mcp", "headers": {"Authorization": "Bearer ${MCPMESH_TEST_TOKEN}"}},
  "streamable": {"type": "streamable-http", "url": "https://e.com/mcp"},
  "sse": {"type": "sse", "url": "https://e.com/sse"},
  "untyped": {"url": "https://e.com/mcp"},
  "local": {"type": "stdio", "command": "mcp-server-time"}
}}"""
    servers = load_config(write(tmp_path, ".mcp.json", text)).servers
    assert {name: (s.url, s.transport) for name, s in servers.items()} == {
        "http": ("https://e.com/mcp", "streamable-http"),
        "streamable": ("https://e.com/mcp", "streamable-http"),
        "sse": ("https://e.com/sse", "sse"),
        "untyped": ("https://e.com/mcp", "streamable-http"),
        "local": (None, "streamable-http"),
    }
    assert servers["http"].headers == {"Authorization": "Bearer ${MCPMESH_TEST_TOKEN}"}
    assert servers["local"].command == "mcp-server-time"


def test_header_values_are_never_echoed_in_errors_reprs_or_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = write(
        tmp_path, "bad.toml", '[servers.x]\nurl = "https://e.com/mcp"\nheaders = { "Bad Name" = "literal-secret" }\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert caught.value.key == "servers.x.headers.Bad Name" and "not a valid HTTP header name" in caught.value.problem
    assert "literal-secret" not in str(caught.value)
    monkeypatch.setenv("MCPMESH_TEST_BROKEN", "line-one\r\nInjected: literal-secret")
    text = '[servers.x]\nurl = "https://e.com/mcp"\nheaders = { X-Key = "${MCPMESH_TEST_BROKEN}" }\n'
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "broken.toml", text))
    assert caught.value.key == "servers.x.headers.X-Key" and "printable ASCII" in caught.value.problem
    assert "literal-secret" not in str(caught.value)
    good = write(
        tmp_path,
        "good.toml",
        '[servers.x]\nurl = "https://e.com/mcp?key=in-query"\nheaders = { X-Key = "literal-secret" }\n',
    )
    assert "literal-secret" not in repr(load_config(good))
    ok = subprocess.run([sys.executable, "-m", "mcpmesh", "check-config", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "x: https://e.com/mcp (streamable-http, sharing=shared, headers: X-Key)" in ok.stdout
    assert "literal-secret" not in ok.stdout + ok.stderr and "in-query" not in ok.stdout


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


def test_a_disabled_server_needs_none_of_its_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCPMESH_TEST_UNSET", raising=False)
    text = (
        '[servers.a]\ncommand = "x"\nenabled = false\nenv = { T = "${MCPMESH_TEST_UNSET}" }\n'
        '[servers.b]\nurl = "https://example.com/mcp"\nenabled = false\n'
        'headers = { Authorization = "Bearer ${MCPMESH_TEST_UNSET}" }\n'
    )
    config = load_config(write(tmp_path, "m.toml", text))
    assert not config.servers["a"].enabled and not config.servers["b"].enabled
    with pytest.raises(ConfigError, match="servers.b.headers.Authorization: environment variable MCPMESH_TEST_UNSET"):
        load_config(write(tmp_path, "on.toml", text.replace("enabled = false\nheaders", "headers")))
