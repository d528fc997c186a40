"""The /v1 JSON API: what the mesh observed about each server, its sessions, ports and events,
in its own shape and in the shape Consul's catalog and health endpoints use."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcpmesh.api.openapi import OPENAPI
from mcpmesh.errors import ServerBlocked
from mcpmesh.front.responses import json_response
from mcpmesh.front.security import HostOriginPolicy
from mcpmesh.observe.stats import RECENT, STEP, WINDOW, TrafficStats
from mcpmesh.registry.base import Registry
from mcpmesh.registry.ports import PortPool
from mcpmesh.registry.resilient import RegistryHealth
from mcpmesh.router.breaker import CircuitBreaker
from mcpmesh.router.catalog import KINDS
from mcpmesh.router.session import SessionStore
from mcpmesh.supervision.process_cap import ProcessGate
from mcpmesh.supervision.reload import Reloader
from mcpmesh.supervision.server import ServerBase, State
from mcpmesh.supervision.supervisor import Supervisor

MAX_PAGE = 1000
MAX_CURSOR = 2**63 - 1  # the largest id SQLite stores
CONTROL_ACTIONS = ("restart", "stop", "start")
# Consul's check statuses: passing serves, warning serves with trouble or soon will, critical does not.
CONSUL_STATUS = {
    State.HEALTHY: "passing",
    State.DEGRADED: "warning",
    State.STARTING: "warning",
    State.RESTARTING: "warning",
}


class Api:
    def __init__(
        self,
        supervisor: Supervisor,
        store: SessionStore,
        registry: Registry,
        pool: PortPool,
        stats: TrafficStats,
        policy: HostOriginPolicy,
        reloader: Reloader | None = None,
        registry_health: Callable[[], RegistryHealth] | None = None,
    ):
        self.reloader = reloader  # None when the mesh was not started from a file
        self.policy = policy  # who may change the mesh (control_refusal)
        self.registry_health = registry_health
        self.supervisor = supervisor
        self.store = store
        self.registry = registry
        self.pool = pool
        self.stats = stats

    def routes(self) -> list[Route]:
        return [
            Route("/v1/servers", self.list_servers, methods=["GET"]),
            Route("/v1/servers/{name}", self.get_server, methods=["GET"]),
            *(Route(f"/v1/servers/{{name}}/{action}", self.control, methods=["POST"]) for action in CONTROL_ACTIONS),
            Route("/v1/servers/{name}/logs", self.server_logs, methods=["GET"]),
            Route("/v1/reload", self.reload, methods=["POST"]),
            Route("/v1/catalog/services", self.consul_services, methods=["GET"]),
            Route("/v1/health/service/{name}", self.consul_health, methods=["GET"]),
            Route("/v1/events", self.list_events, methods=["GET"]),
            Route("/v1/ports", self.list_ports, methods=["GET"]),
            Route("/v1/stats", self.traffic, methods=["GET"]),
            Route("/v1/openapi.json", self.openapi, methods=["GET"]),
        ]

    # -- the mesh's own shape ----------------------------------------------------------------
    async def list_servers(self, request: Request) -> Response:
        base = _base_url(request)
        servers = [self._describe(s, base) for s in self.supervisor.servers.values()]
        return json_response({"servers": servers, "registry": self._registry()})

    def _registry(self) -> dict[str, Any]:
        """The registry's state: `degraded` (with the reason) while writes wait to be made."""
        health = self.registry_health() if self.registry_health is not None else None
        if health is None:
            return {"state": "ok", "reason": None, "pending": 0, "write_failures": 0, "dropped": 0}
        state = "degraded" if health.degraded else "ok"
        counts = {"pending": health.pending, "write_failures": health.write_failures, "dropped": health.dropped}
        return {"state": state, "reason": health.reason, **counts}

    async def get_server(self, request: Request) -> Response:
        server = self.supervisor.servers.get(request.path_params["name"])
        if server is None:
            return _not_found(f"no server named {request.path_params['name']!r}")
        return json_response(self._describe(server, _base_url(request), detail=True))

    async def control(self, request: Request) -> Response:
        """POST /v1/servers/{name}/restart|stop|start: 202 when something was started, 200 when
        the server was stopped or already as asked; the body is the server as it is now."""
        refused = self.policy.control_refusal(request.scope)
        if refused is not None:
            return json_response({"error": "forbidden", "message": str(refused)}, 403)
        name, action = request.path_params["name"], request.url.path.rsplit("/", 1)[1]
        server = self.supervisor.servers.get(name)
        if server is None:
            return _not_found(f"no server named {name!r}")
        who = _who(request)
        try:
            if action == "stop":
                done = await self.supervisor.stop_server(server, who)
            elif action == "start":
                done = await self.supervisor.start_server(server, who)
            else:
                await self.supervisor.restart_server(server, who)
                done = True
        except ServerBlocked as exc:
            return json_response({"error": "conflict", "message": str(exc)}, 409)
        body = {"action": action, "changed": done, "server": self._describe(server, _base_url(request))}
        return json_response(body, 202 if done and action != "stop" else 200)

    async def reload(self, request: Request) -> Response:
        """POST /v1/reload: read the config file again and apply what changed; 200 with what was
        done, 422 (nothing changed) when the new file is refused, 409 when there is no file."""
        refused = self.policy.control_refusal(request.scope)
        if refused is not None:
            return json_response({"error": "forbidden", "message": str(refused)}, 403)
        if self.reloader is None:
            return json_response({"error": "conflict", "message": "this mesh was not started from a config file"}, 409)
        result = await self.reloader.reload(_who(request))
        if result.refused is not None:
            return json_response({"error": "invalid_config", "message": result.refused, **result.as_dict()}, 422)
        return json_response(result.as_dict())

    async def server_logs(self, request: Request) -> Response:
        """The server's stderr lines numbered above `after` (secrets masked): follow with `next`."""
        server = self.supervisor.servers.get(request.path_params["name"])
        if server is None:
            return _not_found(f"no server named {request.path_params['name']!r}")
        paging = _paging(request)
        if isinstance(paging, Response):
            return paging
        after, limit = paging
        lines = server.stderr.after(after, limit)
        body = [{"n": line.n, "at": line.at, "pid": line.pid, "text": line.text} for line in lines]
        return json_response({"server": server.name, "lines": body, "next": lines[-1].n if lines else after})

    def _describe(self, server: ServerBase, base: str, detail: bool = False) -> dict[str, Any]:
        sessions, now = self.store.sessions_of(server.name), time.monotonic()
        listings = self.registry.listings(server.name)
        child = server.live_process
        upstream = server.live_upstream
        described: dict[str, Any] = {
            "name": server.name,
            "state": server.state.value,
            "reason": server.reason,
            "since": server.since,
            "pid": getattr(child, "pid", None),
            "uptime": round(time.time() - server.since, 3) if server.state == State.HEALTHY else None,
            "restarts": server.restarts,
            "sharing": server.config.sharing,
            "enabled": server.config.enabled,
            "era": upstream.era if upstream is not None else None,
            "server_info": upstream.server_info if upstream is not None else None,
            **{kind: len(listings[kind].names) if kind in listings else None for kind in KINDS},
            "urls": self._urls(server.name, base),
            "sessions": len(sessions),
            "active_sessions": sum(1 for s in sessions if s.is_active(now)),
            "clients": sorted({s.client for s in sessions}),
            "last_error": server.last_error,
            "last_error_at": server.last_error_at,
            "circuit": _circuit(server.circuit),
            "processes": _processes(server.gate),
        }
        if detail:
            described["catalog"] = {
                kind: {"count": len(x.names), "hash": x.hash, "names": list(x.names), "since": x.at}
                for kind, x in listings.items()
            }
            described["stderr_tail"] = list(getattr(child, "stderr_tail", []))[-50:]
        return described

    def _urls(self, name: str, base: str) -> dict[str, str]:
        """Where a client reaches the server: the main port, and its own port if it has one."""
        legacy_sse = self.supervisor.config.mesh.legacy_sse
        urls = {"mcp": f"{base}/servers/{name}/mcp"}
        if legacy_sse:
            urls["sse"] = f"{base}/servers/{name}/sse"
        port = self.pool.serving.get(name)
        if port is not None:
            own = f"http://{_host_for_url(self.supervisor.config.mesh.host)}:{port}"
            urls["dedicated_mcp"] = f"{own}/mcp"
            if legacy_sse:
                urls["dedicated_sse"] = f"{own}/sse"
        return urls

    async def list_events(self, request: Request) -> Response:
        paging = _paging(request)
        if isinstance(paging, Response):
            return paging
        after, limit = paging
        events = self.registry.events(after, limit, request.query_params.get("server"))
        body = [{"id": e.id, "at": e.at, "server": e.server, "kind": e.kind, "detail": e.detail} for e in events]
        return json_response({"events": body, "next": events[-1].id if events else after})

    async def list_ports(self, request: Request) -> Response:
        size, used = self.pool.usage()
        leases = [
            {"port": lease.port, "holder": lease.holder, "state": lease.state, "since": lease.since}
            for lease in self.registry.leases()
        ]
        foreign = [{"port": port, "holder": who, "state": "foreign"} for port, who in sorted(self.pool.foreign.items())]
        return json_response({"range": str(self.pool.span), "size": size, "used": used, "ports": leases + foreign})

    async def traffic(self, request: Request) -> Response:
        """Each server's recent calls: rate, error rate and p50/p99 now, and a series to draw."""
        servers = {name: self.stats.summary(name) for name in self.supervisor.servers}
        return json_response({"window": WINDOW, "step": STEP, "recent": RECENT, "servers": servers})

    # -- Consul's shape ----------------------------------------------------------------------
    async def consul_services(self, request: Request) -> Response:
        return json_response({name: _tags(s) for name, s in self.supervisor.servers.items()})

    async def consul_health(self, request: Request) -> Response:
        server = self.supervisor.servers.get(request.path_params["name"])
        if server is None:
            return json_response([])  # Consul answers an unknown service with an empty list
        status = CONSUL_STATUS.get(server.state, "critical")
        address, port = request.url.hostname or "", request.url.port or 80  # where this client reached us
        if request.query_params.get("passing") is not None and status != "passing":
            return json_response([])
        entry = {
            "Node": {"Node": "mcpmesh", "Address": address},
            "Service": {
                "ID": server.name,
                "Service": server.name,
                "Tags": _tags(server),
                "Address": address,
                "Port": port,
                "Meta": {"path": f"/servers/{server.name}/mcp"},
            },
            "Checks": [
                {
                    "Node": "mcpmesh",
                    "CheckID": f"mcp:{server.name}",
                    "Name": "MCP traffic",
                    "Status": status,
                    "Output": server.reason,
                    "ServiceID": server.name,
                    "ServiceName": server.name,
                }
            ],
        }
        return json_response([entry])

    async def openapi(self, request: Request) -> Response:
        return json_response(OPENAPI)


def _paging(request: Request) -> tuple[int, int] | Response:
    """`after` and `limit` from the query (limit capped at MAX_PAGE), or the 400 saying what is wrong."""
    try:
        after = int(request.query_params.get("after", "0"))
        limit = min(int(request.query_params.get("limit", "100")), MAX_PAGE)
    except ValueError:
        return _bad_request("after and limit must be integers")
    if not 0 <= after <= MAX_CURSOR or limit < 1:
        return _bad_request(f"after must be between 0 and {MAX_CURSOR}, and limit >= 1")
    return after, limit


def _who(request: Request) -> str:
    """Who asked for a change, as the event log records it."""
    return f"api ({request.client.host if request.client else 'unknown client'})"


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _tags(server: ServerBase) -> list[str]:
    return ["mcp", f"sharing:{server.config.sharing}"]


def _circuit(breaker: CircuitBreaker | None) -> dict[str, Any] | None:
    if breaker is None:
        return None
    return {"state": breaker.state.value, "failures": breaker.failures, "refused": breaker.refused}


def _processes(gate: ProcessGate) -> dict[str, int] | None:
    if gate.cap is None:  # a remote server has none
        return None
    return {"live": gate.live, "in_use": gate.claimed, "max": gate.cap, "refused": gate.refused}


def _not_found(message: str) -> Response:
    return json_response({"error": "not_found", "message": message}, 404)


def _bad_request(message: str) -> Response:
    return json_response({"error": "bad_request", "message": message}, 400)
