"""How many connections a listener's protocol may hold, in all and per client address, and how
long a request may take to arrive: one object shared by every listener of a process (connection.py
asks it at each accept, and counts refusals in it for the metrics)."""

from __future__ import annotations

from collections import Counter
from typing import Final, Literal

# Connections admitted past a cap, up to this many more, to serve operator requests only (the app
# reads `OVER_CAP` in the scope and refuses the rest): a cap reached by clients leaves room for
# /healthz and the API. Past cap + reserve, a connection is refused as soon as it is accepted.
OPERATOR_RESERVE: Final = 16
OVER_CAP: Final = "mcpmesh.connection_cap"  # scope["extensions"] key on a connection admitted past a cap

Admission = Literal["admitted", "connections", "client_connections", "refused"]


class ConnectionLimits:
    """Open connections counted at accept and release; `refused` tallies refusals by reason
    ("connections", "client_connections": refused at accept or a request refused past a cap;
    "body_timeout": a request that did not arrive within `body_timeout`)."""

    def __init__(self, max_connections: int, max_per_client: int, body_timeout: float):
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.body_timeout = body_timeout
        self.open = 0
        self.by_client: dict[str, int] = {}
        self.refused: Counter[str] = Counter()

    def admit(self, client: str) -> Admission:
        """Count a new connection from `client` in, unless it is past cap + reserve ("refused")."""
        mine = self.by_client.get(client, 0)
        if self.open >= self.max_connections + OPERATOR_RESERVE:
            self.refused["connections"] += 1
            return "refused"
        if mine >= self.max_per_client + OPERATOR_RESERVE:
            self.refused["client_connections"] += 1
            return "refused"
        self.open += 1
        self.by_client[client] = mine + 1
        if self.open > self.max_connections:
            return "connections"
        if mine + 1 > self.max_per_client:
            return "client_connections"
        return "admitted"

    def release(self, client: str) -> None:
        """A connection admitted from `client` is gone."""
        self.open -= 1
        left = self.by_client[client] - 1
        if left:
            self.by_client[client] = left
        else:
            del self.by_client[client]
