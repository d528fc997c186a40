"""Secrets the mesh must mask beyond the plain value of a `secret_env` variable: credentials in a
server's `args` (credential-named flags, token-shaped words), a secret percent-encoded or in base64
(`Basic` credentials), and a secret's beginning where a 64 KiB stderr line is cut."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import httpx
import pytest

from mcpmesh.backend.process import STDERR_LINE_CAP
from mcpmesh.observe.redact import Redactor, secret_args
from tests.conftest import PYTHON, fixture_server, running_mesh

SECRET = "tok/9f8e+7d 6c5b4a&x=1"  # characters that percent-encoding and base64 change
FLAG_SECRET = "flag-5e4d3c2b1a09"
SPACED_SECRET = "spaced-0a9b8c7d6e"
GITHUB_TOKEN = "ghp_A1b2C3d4E5f6G7h8I9j0"


def the_forms_of(secret: str) -> list[str]:
    return [
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        base64.b64encode(f"user:{secret}".encode()).decode(),
        base64.b64encode(secret.encode()).decode(),
    ]


async def stderr_lines(http: httpx.AsyncClient, base_url: str, server: str) -> list[str]:
    page = (await http.get(f"{base_url}/v1/servers/{server}/logs")).json()
    return [line["text"] for line in page["lines"]]


async def events_of(http: httpx.AsyncClient, base_url: str, server: str) -> list[dict[str, Any]]:
    reply = await http.get(f"{base_url}/v1/events", params={"server": server, "limit": 1000})
    events: list[dict[str, Any]] = reply.json()["events"]
    return events


@pytest.mark.anyio
async def test_credentials_in_args_are_masked_in_events_logs_and_the_cli(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    args = ["--stderr-argv", f"--token={FLAG_SECRET}", "--api-key", SPACED_SECRET, "--note", GITHUB_TOKEN]
    server = fixture_server("faulty_server.py", *args)
    async with running_mesh({"fx": server}) as mesh, httpx.AsyncClient(timeout=20) as http:
        spawned = next(e for e in await events_of(http, mesh.base_url, "fx") if e["kind"] == "spawned")
        argv = spawned["detail"]["argv"]
        assert argv[-6:] == ["--stderr-argv", "--token=***", "--api-key", "***", "--note", "***"]
        lines = await stderr_lines(http, mesh.base_url, "fx")
        assert len(lines) == 1 and "'--token=***', '--api-key', '***', '--note', '***'" in lines[0]
        logs = await anyio.run_process([PYTHON, "-m", "mcpmesh", "logs", "fx", "--url", mesh.base_url], check=False)
        shown = logs.stdout.decode()
        assert logs.returncode == 0 and "'--token=***'" in shown, logs.stderr
        everything = json.dumps(spawned) + json.dumps(lines) + shown + caplog.text
        for secret in (FLAG_SECRET, SPACED_SECRET, GITHUB_TOKEN):
            assert secret not in everything
    assert "'--token=***', '--api-key', '***'" in caplog.text  # the spawn's own log line


@pytest.mark.anyio
async def test_percent_encoded_and_base64_secrets_are_masked_in_stderr_and_events() -> None:
    server = fixture_server("faulty_server.py", "--stderr-encoded", "API_TOKEN", "--note", quote(SECRET, safe=""))
    server |= {"env": {"API_TOKEN": SECRET}, "secret_env": ["API_TOKEN"]}
    async with running_mesh({"fx": server}) as mesh, httpx.AsyncClient(timeout=20) as http:
        lines = await stderr_lines(http, mesh.base_url, "fx")
        assert lines == ["url=*** form=*** auth=Basic ***"]
        spawned = next(e for e in await events_of(http, mesh.base_url, "fx") if e["kind"] == "spawned")
        assert spawned["detail"]["argv"][-2:] == ["--note", "***"]


def test_every_encoding_and_alignment_of_a_secret_is_masked() -> None:
    redact = Redactor([SECRET])
    for form in the_forms_of(SECRET):
        assert redact(f"before {form} after") == "before *** after", form
    for user in ("u", "us", "use"):  # each start of the secret within base64's 3-byte groups
        basic = base64.b64encode(f"{user}:{SECRET}".encode()).decode()
        assert redact(f"Authorization: Basic {basic}") == "Authorization: Basic ***"
    encoded = base64.b64encode(SECRET.encode()).decode()
    assert redact(f"q=1&auth={encoded}&next=2") == "q=1&auth=***&next=2"  # the word, not its neighbours
    assert (
        redact(f"ends in {SECRET[:4]}") == "ends in ***" and redact(f"ends in {SECRET[:3]}") == f"ends in {SECRET[:3]}"
    )


def test_secret_args_are_credential_flags_values_and_token_shaped_words_only() -> None:
    args = ["--token=a1", "--api-key", "b2", "--password", "--port", "80", "--auth-port", "8080", GITHUB_TOKEN]
    assert secret_args(args) == ["a1", "b2", GITHUB_TOKEN]


@pytest.mark.anyio
async def test_a_stderr_line_cut_inside_a_secret_shows_no_beginning_of_it() -> None:
    head = "API_TOKEN="
    pad = STDERR_LINE_CAP - len(head) - 6  # the cut falls six characters into the secret
    server = fixture_server("faulty_server.py", "--stderr-env", "API_TOKEN", "--stderr-pad", str(pad))
    server |= {"env": {"API_TOKEN": SECRET}, "secret_env": ["API_TOKEN"]}
    async with running_mesh({"fx": server}) as mesh, httpx.AsyncClient(timeout=20) as http:
        lines = await stderr_lines(http, mesh.base_url, "fx")
        detail = (await http.get(f"{mesh.base_url}/v1/servers/fx")).json()
    assert lines == ["x" * pad + head + "***"]  # one line: the rest of it is not a line of its own
    assert detail["stderr_tail"] == lines
