"""MCP knowledge with no I/O: which revisions are served and how a version is negotiated
(versions.py), the 2026-07-28 `_meta` envelope (envelope.py), what a 2026-07-28 request must
satisfy (requests.py), the shape of results across eras (results.py), log levels, the
notifications the gateway writes, and sealed input-required state (request_state.py).

May import: jsonrpc, errors. Nothing here reads a socket, a pipe or a clock other than time."""
