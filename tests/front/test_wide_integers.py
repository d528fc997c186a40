"""Integers past 64 bits: orjson would read them as floats and the server would get another
number. They are refused before anything is registered, with the request's id; a 64-bit one and
a long run of digits inside a string pass untouched."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import fixture_server, running_mesh
from tests.front.test_stateless import V
from tests.front.test_streamable_http import headers, open_session

pytestmark = pytest.mark.anyio

TOO_WIDE = str(2**64)  # one past the largest unsigned 64-bit integer
WIDEST = str(2**64 - 1)


def tools_call(request_id: int, number: str, meta: str = "") -> bytes:
    arguments = f'{{"text":"12345678901234567890123456789","n":{number}}}'
    params = f'{{"name":"echo","arguments":{arguments}{meta}}}'
    return f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{params}}}'.encode()


async def test_a_handshake_session_request_with_a_wide_integer_is_refused_with_its_id() -> None:
    async with running_mesh({"conf": fixture_server("faulty_server.py")}) as mesh:
        async with httpx.AsyncClient(timeout=20) as http:
            session = headers(await open_session(http, mesh))
            refused = await http.post(mesh.url("conf"), content=tools_call(7, TOO_WIDE), headers=session)
            assert refused.status_code == 400, refused.text
            body = refused.json()
            assert body["id"] == 7 and body["error"]["code"] == -32600
            assert f"integer {TOO_WIDE} does not fit in 64 bits" in body["error"]["message"]
            (opened,) = mesh.mesh.store.sessions()
            assert opened.inflight == {} and not opened.mux.calls  # type: ignore[attr-defined]
            served = await http.post(mesh.url("conf"), content=tools_call(8, WIDEST), headers=session)
            assert served.status_code == 200 and "result" in served.json(), served.text


async def test_a_2026_request_with_a_wide_integer_is_refused_with_its_id() -> None:
    envelope = f'"io.modelcontextprotocol/protocolVersion":"{V}","io.modelcontextprotocol/clientCapabilities":{{}}'
    meta = f',"_meta":{{{envelope}}}'
    modern = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": V,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
    }
    async with running_mesh({"conf": fixture_server("faulty_server.py")}) as mesh:
        async with httpx.AsyncClient(timeout=20) as http:
            refused = await http.post(mesh.url("conf"), content=tools_call(3, f"-{TOO_WIDE}0", meta), headers=modern)
            assert refused.status_code == 400, refused.text
            assert refused.json()["id"] == 3 and refused.json()["error"]["code"] == -32600
            served = await http.post(mesh.url("conf"), content=tools_call(4, f"-{2**63}", meta), headers=modern)
            assert served.status_code == 200 and "result" in served.json(), served.text
