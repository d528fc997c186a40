"""Every metric of one mesh, on a CollectorRegistry of its own (never the global one): traffic is
counted as calls end (a CallObserver) in plain dicts, and exported at scrape time like the states,
sessions, ports and byte counts read from the live objects: the hot path takes no lock and builds
no metric object (prometheus-client's labelled counters and histogram cost 6 µs a call, bench/)."""

from __future__ import annotations

import math
import re
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import Response

from mcpmesh.front.http1.limits import ConnectionLimits
from mcpmesh.registry.ports import PortPool
from mcpmesh.registry.resilient import RegistryHealth
from mcpmesh.router.session import IDLE_TIMEOUT, Call, ClientSession, SessionStore
from mcpmesh.supervision.server import State
from mcpmesh.supervision.supervisor import Supervisor

# Sub-millisecond (a cached answer) to minutes (a long tool run, up to the default request_timeout).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BUCKET_LABELS = [floatToGoString(b) for b in (*BUCKETS, math.inf)]  # type: ignore[no-untyped-call]  # as `le`
MAX_CLIENTS = 50  # distinct client names per mesh; more fold into "other"
MAX_METHODS = 100  # methods are the client's choice too (unknown ones pass through)
MAX_TOOLS = 200  # distinct tool names per server
MAX_LABEL_LENGTH = 64
OTHER = "other"
UNKNOWN = "unknown"
UNKNOWN_TOOL = "unknown_tool"  # a name the server does not list: the client's typo is no new series
CLIENT_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")  # method and tool names: `tools/call`, `github/search`
CIRCUIT_STATES = {"closed": 0, "open": 1, "half_open": 2}


class BoundedLabel:
    """A free-form value (a client's name, a tool's) made into a label value: unsafe characters
    replaced, cut to length, and once `limit` distinct values were seen, new ones become "other",
    so no client can grow the number of series without bound."""

    def __init__(self, limit: int, unsafe: re.Pattern[str] = CLIENT_CHARS):
        self.limit = limit
        self.unsafe = unsafe
        self._seen: set[str] = set()
        self._memo: dict[str, str] = {}  # value -> label, for the hot path; bounded like the labels

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str) or not value:
            return UNKNOWN
        memo = self._memo.get(value)
        if memo is not None:
            return memo
        label = self.unsafe.sub("_", value[:MAX_LABEL_LENGTH])
        if label not in self._seen:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(label)
        if len(self._memo) < 4 * self.limit:
            self._memo[value] = label
        return label


class MeshMetrics:
    """The metrics of one mesh; also the CallObserver every server reports its calls to."""

    def __init__(self, servers: Iterable[str], registry: CollectorRegistry | None = None):
        servers = list(servers)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clients = BoundedLabel(MAX_CLIENTS)
        self.methods = BoundedLabel(MAX_METHODS, NAME_CHARS)
        self.tools = {name: BoundedLabel(MAX_TOOLS, NAME_CHARS) for name in servers}
        r = self.registry
        self.calls = CallCounts()
        self.sessions_opened = Counter("mcpmesh_sessions_opened", "Client sessions opened", ["server"], registry=r)
        self.sessions_closed = Counter(
            "mcpmesh_sessions_closed", "Client sessions ended, for any reason", ["server"], registry=r
        )
        self.sessions_expired = Counter(
            "mcpmesh_sessions_expired", "Client sessions ended by the idle timeout", ["server"], registry=r
        )
        for name in servers:  # every server's series exist from the start, at 0
            self.calls.in_flight[name] = 0
            for counter in (self.sessions_opened, self.sessions_closed, self.sessions_expired):
                counter.labels(name)
        r.register(self.calls)

    def watch(
        self,
        supervisor: Supervisor,
        store: SessionStore,
        pool: PortPool,
        registry_health: Callable[[], RegistryHealth] | None = None,
        connections: ConnectionLimits | None = None,
    ) -> None:
        """Also export, at every scrape, what the running mesh's servers, sessions, ports, registry
        and connections say."""
        self.registry.register(_LiveCollector(supervisor, store, pool, self.clients))
        if registry_health is not None:
            self.registry.register(_RegistryCollector(registry_health))
        if connections is not None:
            self.registry.register(_ConnectionCollector(connections))

    # -- CallObserver ------------------------------------------------------------------------
    def call_started(self, server: str, call: Call) -> None:
        self.calls.in_flight[server] += 1

    def call_done(self, server: str, call: Call, outcome: str) -> None:
        counts = self.calls
        counts.in_flight[server] -= 1
        method = self.methods(call.method)
        counts.requests[(server, method, self.clients(call.session.client_info.get("name")), outcome)] += 1
        histogram = counts.durations.get((server, method))
        if histogram is None:
            histogram = counts.durations[(server, method)] = [0] * (len(BUCKETS) + 1) + [0.0]
        seconds = time.monotonic() - call.started
        histogram[bisect_left(BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds (le)
        histogram[-1] += seconds
        if call.method == "tools/call":
            tools = self.tools.get(server) or self.tools.setdefault(server, BoundedLabel(MAX_TOOLS, NAME_CHARS))
            known = call.session.mux.tool_params  # the names the server listed, once it has been asked
            tool = tools(call.name) if not known or call.name in known else UNKNOWN_TOOL
            counts.tools[(server, tool, outcome)] += 1

    # -- sessions (from SessionStore.on_event) -----------------------------------------------
    def session_event(self, kind: str, session: ClientSession, reason: str) -> None:
        if kind == "session_opened":
            self.sessions_opened.labels(session.server).inc()
        elif kind == "session_closed":
            self.sessions_closed.labels(session.server).inc()
            if reason == IDLE_TIMEOUT:
                self.sessions_expired.labels(session.server).inc()

    # -- exposition --------------------------------------------------------------------------
    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics. Runs on the event loop, so a scrape sees the live objects consistently."""
        return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)


class CallCounts(Collector):
    """Forwarded calls as counted by MeshMetrics.call_done; the label values are bounded there."""

    def __init__(self) -> None:
        self.in_flight: Tally[str] = Tally()
        self.requests: Tally[tuple[str, str, str, str]] = Tally()  # (server, method, client, outcome)
        self.durations: dict[tuple[str, str], list[Any]] = {}  # (server, method): per-bucket counts, +Inf, sum
        self.tools: Tally[tuple[str, str, str]] = Tally()  # (server, tool, outcome)

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "mcpmesh_requests",
            "Requests forwarded to a server, by how they ended",
            labels=["server", "method", "client", "outcome"],
        )
        for request, count in sorted(self.requests.items()):
            requests.add_metric(list(request), count)
        duration = HistogramMetricFamily(
            "mcpmesh_request_duration_seconds",
            "Time from forwarding a request to its end (answer, error, timeout, cancel)",
            labels=["server", "method"],
        )
        for series, histogram in sorted(self.durations.items()):
            buckets = list(zip(BUCKET_LABELS, accumulate(histogram[:-1]), strict=True))
            duration.add_metric(list(series), buckets, histogram[-1])
        in_flight = GaugeMetricFamily(
            "mcpmesh_requests_in_flight", "Requests forwarded and not ended", labels=["server"]
        )
        for server, count in sorted(self.in_flight.items()):
            in_flight.add_metric([server], count)
        tools = CounterMetricFamily(
            "mcpmesh_tool_calls", "tools/call requests by tool and outcome", labels=["server", "tool", "outcome"]
        )
        for tool, count in sorted(self.tools.items()):
            tools.add_metric(list(tool), count)
        yield from (requests, duration, in_flight, tools)


class _LiveCollector(Collector):
    """Series read from the running mesh at scrape time."""

    def __init__(self, supervisor: Supervisor, store: SessionStore, pool: PortPool, clients: BoundedLabel):
        self.supervisor, self.store, self.pool, self.clients = supervisor, store, pool, clients

    def collect(self) -> Iterable[Metric]:
        servers = self.supervisor.servers.values()
        state = GaugeMetricFamily(
            "mcpmesh_server_state", "1 for the state the server is in", labels=["server", "state"]
        )
        restarts = CounterMetricFamily(
            "mcpmesh_server_restarts", "Restarts of a server's process, by cause", labels=["server", "reason"]
        )
        circuit = GaugeMetricFamily(
            "mcpmesh_circuit_state", "The server's circuit breaker: 0 closed, 1 open, 2 half-open", labels=["server"]
        )
        dropped = CounterMetricFamily(
            "mcpmesh_stdout_dropped_lines",
            "Lines (remote: messages) a server sent that were dropped, by reason",
            labels=["server", "reason"],
        )
        sent = CounterMetricFamily("mcpmesh_server_bytes_sent", "Bytes written to the server", labels=["server"])
        received = CounterMetricFamily(
            "mcpmesh_server_bytes_received", "Bytes read from the server (lines with their newline)", labels=["server"]
        )
        backlog = GaugeMetricFamily(
            "mcpmesh_server_input_backlog_bytes",
            "Bytes written to the server's processes and not yet read by them (past 16 MiB a process refuses more)",
            labels=["server"],
        )
        processes = GaugeMetricFamily("mcpmesh_server_processes", "A local server's processes now", labels=["server"])
        cap = GaugeMetricFamily("mcpmesh_server_max_processes", "A local server's max_processes", labels=["server"])
        refused = CounterMetricFamily(
            "mcpmesh_server_processes_refused",
            "Sessions and 2026-07-28 requests refused because every process the server may have was in use",
            labels=["server"],
        )
        for server in servers:
            for value in State:
                state.add_metric([server.name, value.value], 1.0 if server.state == value else 0.0)
            causes = Tally(dict.fromkeys(server.restart_causes, 0))
            causes.update(server.restart_reasons)
            for cause, count in sorted(causes.items()):
                restarts.add_metric([server.name, cause], count)
            breaker = server.circuit  # a shared server's live process has one
            circuit.add_metric([server.name], CIRCUIT_STATES[breaker.state] if breaker is not None else 0)
            for reason, count in sorted(server.stdout_dropped().items()):
                dropped.add_metric([server.name, reason], count)
            sent.add_metric([server.name], server.traffic.sent)
            backlog.add_metric([server.name], sum(child.backlog for child in server.live_connections()))
            received.add_metric([server.name], server.traffic.received)
            if server.gate.cap is not None:  # a remote server has no processes
                processes.add_metric([server.name], server.gate.live)
                cap.add_metric([server.name], server.gate.cap)
                refused.add_metric([server.name], server.gate.refused)
        yield from (state, restarts, circuit, dropped, sent, received, backlog, processes, cap, refused)
        yield self._sessions()
        size, used = self.pool.usage()
        yield GaugeMetricFamily("mcpmesh_port_pool_size", "Ports in the dedicated-port range", value=size)
        yield GaugeMetricFamily("mcpmesh_port_pool_used", "Ports of the range held by a server", value=used)

    def _sessions(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "mcpmesh_sessions",
            "Client sessions open now, by client name and protocol version",
            labels=["server", "client", "era"],
        )
        counts: Tally[tuple[str, str, str]] = Tally()
        for session in self.store.sessions():
            counts[(session.server, self.clients(session.client_info.get("name")), session.protocol_version)] += 1
        for labels, count in sorted(counts.items()):
            family.add_metric(list(labels), count)
        return family


class _RegistryCollector(Collector):
    """Whether the registry keeps up (ResilientRegistry.health), read at scrape time."""

    def __init__(self, health: Callable[[], RegistryHealth]):
        self.health = health

    def collect(self) -> Iterable[Metric]:
        health = self.health()
        yield GaugeMetricFamily(
            "mcpmesh_registry_degraded",
            "1 while registry writes fail and wait in memory to be retried",
            value=1.0 if health.degraded else 0.0,
        )
        yield GaugeMetricFamily(
            "mcpmesh_registry_pending_writes",
            "Registry writes waiting to be made (each event counts)",
            value=health.pending,
        )
        yield CounterMetricFamily(
            "mcpmesh_registry_write_failures", "Registry write attempts that failed", value=health.write_failures
        )
        yield CounterMetricFamily(
            "mcpmesh_registry_dropped_writes",
            "Queued registry events given up to keep the queue bounded",
            value=health.dropped,
        )


class _ConnectionCollector(Collector):
    """Open HTTP connections and refusals by the caps and the body deadline, read at scrape time."""

    REASONS = ("connections", "client_connections", "body_timeout")

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "mcpmesh_http_connections", "HTTP connections open on every listener", value=self.limits.open
        )
        refused = CounterMetricFamily(
            "mcpmesh_http_refused",
            "Connections or requests refused: past max_connections (connections), past "
            "max_connections_per_client (client_connections), or not in within body_timeout (body_timeout)",
            labels=["reason"],
        )
        for reason in self.REASONS:
            refused.add_metric([reason], self.limits.refused[reason])
        yield refused
