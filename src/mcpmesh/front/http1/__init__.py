"""HTTP/1.1, our own protocol under uvicorn's server: `connection.py` is one connection (parsing,
queueing, flow control, time-outs, failures), `exchange.py` one request's receive, send and
response framing. May import: nothing of mcpmesh (it serves any ASGI app)."""
