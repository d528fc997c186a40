"""Results across eras, on their own: what a handshake-era client gets of a 2026-07-28 result."""

from __future__ import annotations

from mcpmesh.protocol.results import to_handshake_era

SERVER_INFO = "io.modelcontextprotocol/serverInfo"


def test_2026_only_fields_are_taken_off_for_a_handshake_era_client() -> None:
    msg = {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {
            "tools": [{"name": "t"}],
            "resultType": "complete",
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": {SERVER_INFO: {"name": "s"}, "vendor/trace": "x"},
        },
    }
    to_handshake_era(msg)
    assert msg == {"jsonrpc": "2.0", "id": 7, "result": {"tools": [{"name": "t"}], "_meta": {"vendor/trace": "x"}}}


def test_a_meta_left_empty_goes_too_and_errors_pass_untouched() -> None:
    msg = {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "resultType": "complete", "_meta": {SERVER_INFO: {}}}}
    to_handshake_era(msg)
    assert msg["result"] == {"content": []}
    refused = {"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "no"}}
    to_handshake_era(refused)
    assert refused == {"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "no"}}


def test_an_input_required_result_nobody_relayed_becomes_an_error() -> None:
    msg = {"jsonrpc": "2.0", "id": 3, "result": {"resultType": "input_required", "requestState": "s"}}
    to_handshake_era(msg)
    assert "result" not in msg
    assert msg["error"]["code"] == -32603 and "could not relay" in msg["error"]["message"]
