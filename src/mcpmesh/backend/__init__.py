"""One connection to one server: what a connection offers (connection.py), a child process over
stdio (process.py), a remote server over HTTP (remote.py, what both HTTP transports share;
streamable_http.py and legacy_sse.py, one transport each; response_reader.py, bounded reads of
their bodies), and one MCP connection over either (upstream.py: framing, era probe, handshake,
the gateway's own calls).

May import: config, protocol, jsonrpc, errors. Knows nothing of clients or their sessions."""
