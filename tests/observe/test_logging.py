"""Logs and the audit trail: `mcpmesh up --log-format json` run as users run it, secrets never
logged (even when a server echoes one), `mcpmesh logs [-f]`, `mcpmesh events`, and the events a
tool call, a session and a spawn leave in the registry."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcpmesh.config import MeshConfig, load_config
from mcpmesh.errors import ConfigError
from mcpmesh.observe.logs import RedactingFilter, configure
from mcpmesh.observe.redact import Redactor
from tests.cli.test_shutdown import free_port, toml_value
from tests.conftest import PYTHON, fixture_server, running_mesh
from tests.observe.test_metrics import Raw

SECRET = "tok-9f8e7d6c5b4a"
HEADER_SECRET = "hdr-0a1b2c3d4e5f"
STARTUP_BOUND = 60.0


def echoing_server() -> dict[str, Any]:
    """The faulty fixture given a secret it prints on stderr at start and carries in its argv."""
    table = fixture_server("faulty_server.py", "--stderr-env", "API_TOKEN", "--note", SECRET)
    return {**table, "env": {"API_TOKEN": SECRET}, "secret_env": ["API_TOKEN"]}


class Up:
    """`mcpmesh up --log-format json` in a subprocess, its stdout and stderr kept in files."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        config = tmp_path / "mcpmesh.toml"
        lines = ["[mesh]", f"port = {self.port}", f"state_dir = {toml_value(str(tmp_path / 'state'))}", ""]
        lines += ["[servers.fx]", *(f"{k} = {toml_value(v)}" for k, v in echoing_server().items() if k != "env")]
        lines += [f"env = {{ API_TOKEN = {toml_value(SECRET)} }}"]
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.out, self.err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            argv = [PYTHON, "-m", "mcpmesh", "up", "--config", str(config), "--log-format", "json"]
            self.proc = subprocess.Popen(argv, cwd=tmp_path, stdout=out, stderr=err)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_BOUND
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"mcpmesh exited early:\n{self.err.read_text()}"
                try:
                    if http.get(f"{self.base_url}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.1)
        raise AssertionError(f"not ready within {STARTUP_BOUND:g}s:\n{self.err.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    mesh = Up(tmp_path)
    try:
        yield mesh
    finally:
        if mesh.proc.poll() is None:
            mesh.proc.kill()
            mesh.proc.wait(timeout=10)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "mcpmesh", *args], capture_output=True, text=True, timeout=60)


def test_a_secret_never_reaches_the_log_events_or_api_even_when_the_server_echoes_it(up: Up) -> None:
    up.wait_ready()
    with httpx.Client(base_url=up.base_url, timeout=10) as http:
        detail = http.get("/v1/servers/fx").json()
        assert "API_TOKEN=***" in detail["stderr_tail"]
        logs = cli("logs", "fx", "--url", up.base_url)
        assert logs.returncode == 0 and "API_TOKEN=***" in logs.stdout, logs.stderr
        events = cli("events", "--url", up.base_url, "--server", "fx", "--json")
        spawned = [e for e in map(json.loads, events.stdout.splitlines()) if e["kind"] == "spawned"]
        assert spawned and spawned[0]["detail"]["argv"][-2:] == ["--note", "***"]
        assert SECRET not in json.dumps(detail) + logs.stdout + events.stdout
    up.stop()
    out, err = up.out.read_text(), up.err.read_text()
    assert SECRET not in out + err
    records = [json.loads(line) for line in err.splitlines()]  # every line is one JSON object
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    echoed = [r for r in records if r["logger"] == "mcpmesh.server.fx"]
    assert echoed and echoed[0]["msg"] == "API_TOKEN=***" and echoed[0]["server"] == "fx"
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's lines are JSON too
    assert any("'--note', '***'" in r["msg"] for r in records if r["logger"] == "mcpmesh.process")


def test_logs_follow_prints_the_lines_of_the_next_process_after_a_restart(up: Up) -> None:
    up.wait_ready()
    with httpx.Client(timeout=10) as http:
        first_pid = http.get(f"{up.base_url}/v1/servers/fx").json()["pid"]
    argv = [PYTHON, "-m", "mcpmesh", "logs", "fx", "-f", "--json", "--url", up.base_url]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as follower:
        try:
            assert follower.stdout is not None
            first = json.loads(follower.stdout.readline())
            assert first == {**first, "n": 1, "pid": first_pid, "text": "API_TOKEN=***"}
            os.kill(first_pid, signal.SIGKILL)  # the mesh restarts it; the new process prints again
            second = json.loads(follower.stdout.readline())
            assert second["n"] == 2 and second["pid"] != first_pid and second["text"] == "API_TOKEN=***"
        finally:
            follower.terminate()


def test_events_and_logs_say_clearly_when_the_mesh_cannot_answer(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    events = cli("events", "--url", f"http://127.0.0.1:{port}")
    assert events.returncode == 2 and f"cannot reach the mesh at http://127.0.0.1:{port}" in events.stderr
    missing = cli("logs", "nope", "--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "--url" in missing.stderr


@pytest.mark.anyio
async def test_tool_calls_sessions_and_spawns_are_in_the_event_log() -> None:
    async with running_mesh({"fx": echoing_server()}) as mesh, httpx.AsyncClient(timeout=20) as http:
        raw = await Raw.open(http, mesh.url("fx"), "auditor")
        await raw.call_tool("echo", text="hi")
        await raw.call_tool("no_such_tool")
        await raw.close()

        async def tool_calls() -> list[dict[str, Any]]:
            reply = await http.get(f"{mesh.base_url}/v1/events", params={"server": "fx", "limit": 1000})
            return [e for e in reply.json()["events"] if e["kind"] == "tool_call"]

        with anyio.fail_after(10):  # written in batches, within about half a second
            while len(calls := await tool_calls()) < 2:  # noqa: ASYNC110  # the event log has no change event
                await anyio.sleep(0.05)
        details = [c["detail"] for c in calls]
        assert [(d["client"], d["tool"], d["outcome"]) for d in details] == [
            ("auditor/1", "echo", "ok"),
            ("auditor/1", "no_such_tool", "error"),
        ]
        assert all(d["duration_ms"] >= 0 and d["session"] == raw.session_id[:8] for d in details)
        log = (await http.get(f"{mesh.base_url}/v1/events", params={"server": "fx"})).json()["events"]
        sessions = [(e["kind"], e["detail"]["client"], e["detail"]["era"]) for e in log if "session" in e["kind"]]
        assert sessions == [
            ("session_opened", "auditor/1", "2025-11-25"),
            ("session_closed", "auditor/1", "2025-11-25"),
        ]
        spawned = next(e for e in log if e["kind"] == "spawned")
        assert spawned["detail"]["argv"][0] == PYTHON and spawned["detail"]["argv"][-1] == "***"


@pytest.mark.anyio
async def test_the_logs_api_pages_by_line_number_and_refuses_bad_input() -> None:
    async with running_mesh({"fx": echoing_server()}) as mesh, httpx.AsyncClient(timeout=20) as http:
        url = f"{mesh.base_url}/v1/servers/fx/logs"
        page = (await http.get(url)).json()
        assert [line["text"] for line in page["lines"]] == ["API_TOKEN=***"] and page["next"] == 1
        assert (await http.get(url, params={"after": 1})).json() == {"server": "fx", "lines": [], "next": 1}
        assert (await http.get(url, params={"after": -1})).status_code == 400
        assert (await http.get(url, params={"limit": "x"})).status_code == 400
        assert (await http.get(f"{mesh.base_url}/v1/servers/nope/logs")).status_code == 404


@pytest.mark.anyio
async def test_a_server_gets_its_env_references_expanded_and_a_secret_one_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCPMESH_TEST_TOKEN", SECRET)
    monkeypatch.setenv("MCPMESH_TEST_NAME", "mesh")
    monkeypatch.delenv("MCPMESH_TEST_UNSET", raising=False)
    secret = fixture_server("faulty_server.py", "--stderr-env", "API_TOKEN")
    secret |= {"env": {"API_TOKEN": "${MCPMESH_TEST_TOKEN}"}, "secret_env": ["API_TOKEN"]}
    plain = fixture_server("faulty_server.py", "--stderr-env", "GREETING")
    plain |= {"env": {"GREETING": "hello ${MCPMESH_TEST_NAME}, ${MCPMESH_TEST_UNSET:-and all}"}}
    async with running_mesh({"secret": secret, "plain": plain}) as mesh, httpx.AsyncClient(timeout=20) as http:
        lines = {}
        for name in ("secret", "plain"):
            page = (await http.get(f"{mesh.base_url}/v1/servers/{name}/logs")).json()
            lines[name] = [line["text"] for line in page["lines"]]
    assert lines == {"secret": ["API_TOKEN=***"], "plain": ["GREETING=hello mesh, and all"]}


def test_the_filter_masks_secrets_in_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    configure("text", "info", Redactor([SECRET]), stream)
    log = logging.getLogger("mcpmesh.test")
    try:
        log.info("token is %s", SECRET)
        try:
            raise RuntimeError(f"refused {SECRET}")
        except RuntimeError:
            log.exception("failed")
    finally:
        for handler in list(logging.getLogger().handlers):
            if any(isinstance(f, RedactingFilter) for f in handler.filters):
                logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "token is ***" in text and "RuntimeError: refused ***" in text and SECRET not in text


def test_secrets_come_from_secret_env_and_credential_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_TOKEN", HEADER_SECRET)
    monkeypatch.setenv("INHERITED", "inherited-secret")
    local = {**echoing_server(), "inherit_env": ["INHERITED"], "secret_env": ["API_TOKEN", "INHERITED"]}
    remote = {
        "url": "https://mcp.example.com/mcp",
        "headers": {"Authorization": "Bearer ${TEAM_TOKEN}", "X-Api-Key": "literal-key", "Accept-Language": "en"},
    }
    redact = Redactor.from_config(MeshConfig.model_validate({"servers": {"fx": local, "team": remote}}))
    text = f"{SECRET} {HEADER_SECRET} Bearer {HEADER_SECRET} literal-key inherited-secret en"
    assert redact(text) == "*** *** *** *** *** en"  # the whole header value is one secret


def test_secret_env_must_name_a_variable_the_server_gets(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[servers.x]\ncommand = "a"\nenv = { A = "1" }\nsecret_env = ["B"]\n')
    with pytest.raises(ConfigError, match=r"servers\.x\.secret_env: B is neither in `env` nor in `inherit_env`"):
        load_config(path)


@pytest.mark.anyio
async def test_the_event_log_keeps_the_newest_event_retention_events_while_calls_are_written() -> None:
    async with (
        running_mesh({"fx": echoing_server()}, event_retention=100) as mesh,
        httpx.AsyncClient(timeout=20) as http,
    ):
        raw = await Raw.open(http, mesh.url("fx"), "auditor")
        for i in range(160):
            await raw.call_tool("echo", text=f"call {i}")

        async def events() -> list[dict[str, Any]]:
            return (await http.get(f"{mesh.base_url}/v1/events", params={"limit": 1000})).json()["events"]

        with anyio.fail_after(10):  # written (and trimmed) in batches, within about half a second
            while (await events())[-1]["kind"] != "tool_call":  # noqa: ASYNC110  # no change event to wait on
                await anyio.sleep(0.05)
        log = await events()
        assert len(log) == 100  # more than 160 were written: the oldest went, the mesh still running
        ids = [e["id"] for e in log]
        assert ids == list(range(ids[0], ids[0] + 100))  # the newest ones, none skipped
        assert [e["detail"]["duration_ms"] >= 0 for e in log if e["kind"] == "tool_call"].count(True) >= 90
        await raw.close()
