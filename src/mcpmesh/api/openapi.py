"""The OpenAPI 3 document of the /v1 API, served at /v1/openapi.json and checked by schemathesis."""

from __future__ import annotations

from typing import Any


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": kind, "nullable": True}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_NOT_FOUND = _json(_ref("Error"), "No such server")
_AFTER = {
    "name": "after",
    "in": "query",
    "required": False,
    "description": "the last id (or line number) already seen",
    "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "mcpmesh", "version": "1", "description": "What the mesh observed about its MCP servers."},
    "paths": {
        "/v1/servers": {
            "get": {
                "operationId": "listServers",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["servers", "registry"],
                            "properties": {
                                "servers": {"type": "array", "items": _ref("Server")},
                                "registry": _ref("RegistryHealth"),
                            },
                        }
                    )
                },
            }
        },
        "/v1/servers/{name}": {
            "get": {
                "operationId": "getServer",
                "parameters": [_NAME],
                "responses": {"200": _json(_ref("ServerDetail")), "404": _NOT_FOUND},
            }
        },
        **{
            f"/v1/servers/{{name}}/{action}": {
                "post": {
                    "operationId": f"{action}Server",
                    "summary": summary,
                    "parameters": [_NAME],
                    "responses": {
                        "200": _json(_ref("ControlResult"), "Stopped, or already as asked"),
                        "202": _json(_ref("ControlResult"), "Started; the server's state tells how far it got"),
                        "404": _NOT_FOUND,
                        "409": _json(_ref("Error"), "The server cannot run (its reason says why)"),
                    },
                }
            }
            for action, summary in (
                ("restart", "Stop the server's processes and start them again with a fresh restart budget"),
                ("stop", "Stop the server and keep it stopped; its sessions end"),
                ("start", "Start a stopped or failed server"),
            )
        },
        "/v1/reload": {
            "post": {
                "operationId": "reload",
                "summary": "Read the config file again and apply what changed: added servers start, removed ones "
                "stop, changed ones restart, unchanged ones keep their processes and sessions",
                "responses": {
                    "200": _json(_ref("ReloadResult"), "Applied"),
                    "403": _json(_ref("Error"), "The request's Origin may not change the mesh"),
                    "409": _json(_ref("Error"), "The mesh was not started from a config file"),
                    "422": _json(_ref("ReloadResult"), "The new file is refused (`message` says why); nothing changed"),
                },
            }
        },
        "/v1/servers/{name}/logs": {
            "get": {
                "operationId": "getServerLogs",
                "description": "The server's stderr lines (every process it had, secrets masked), numbered from 1 "
                "for the life of the mesh; the latest 1000 are kept. Follow by passing the answer's `next` as "
                "`after`.",
                "parameters": [
                    _NAME,
                    _AFTER,
                    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["server", "lines", "next"],
                            "properties": {
                                "server": {"type": "string"},
                                "lines": {"type": "array", "items": _ref("LogLine")},
                                "next": {"type": "integer"},
                            },
                        }
                    ),
                    "400": _json(_ref("Error"), "Bad paging parameters"),
                    "404": _NOT_FOUND,
                },
            }
        },
        "/v1/catalog/services": {
            "get": {
                "operationId": "consulCatalogServices",
                "responses": {
                    "200": _json(
                        {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}
                    )
                },
            }
        },
        "/v1/health/service/{name}": {
            "get": {
                "operationId": "consulHealthService",
                "parameters": [
                    _NAME,
                    {"name": "passing", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {"200": _json({"type": "array", "items": _ref("ConsulHealthEntry")})},
            }
        },
        "/v1/events": {
            "get": {
                "operationId": "listEvents",
                "parameters": [
                    _AFTER,
                    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
                    {"name": "server", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["events", "next"],
                            "properties": {
                                "events": {"type": "array", "items": _ref("Event")},
                                "next": {"type": "integer"},
                            },
                        }
                    ),
                    "400": _json(_ref("Error"), "Bad paging parameters"),
                },
            }
        },
        "/v1/ports": {
            "get": {
                "operationId": "listPorts",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["range", "size", "used", "ports"],
                            "properties": {
                                "range": _nullable("string"),
                                "size": {"type": "integer"},
                                "used": {"type": "integer"},
                                "ports": {"type": "array", "items": _ref("Port")},
                            },
                        }
                    )
                },
            }
        },
        "/v1/stats": {
            "get": {
                "operationId": "getStats",
                "description": "Each server's calls that ended recently, counted per second: over the last `recent` "
                "seconds the request rate, the error rate (JSON-RPC errors, time-outs and exits mid-call; tool "
                "errors, cancellations and ended sessions are not errors) and p50/p99 latency; and a series of "
                "`step`-second points over the last `window` seconds. Latencies are in seconds, read from bins "
                "about 19 % wide (never above the slowest call); null when no call ended.",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["window", "step", "recent", "servers"],
                            "properties": {
                                "window": {"type": "integer"},
                                "step": {"type": "integer"},
                                "recent": {"type": "integer"},
                                "servers": {"type": "object", "additionalProperties": _ref("ServerStats")},
                            },
                        }
                    )
                },
            }
        },
        "/v1/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": _json({"type": "object"})}}},
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
            },
            "RegistryHealth": {
                "type": "object",
                "description": "degraded while writes wait to be made (the mesh serves from memory meanwhile)",
                "required": ["state", "reason", "pending", "write_failures", "dropped"],
                "properties": {
                    "state": {"type": "string", "enum": ["ok", "degraded"]},
                    "reason": {**_nullable("string"), "description": "what failed, the file, and how many wait"},
                    "pending": {"type": "integer", "description": "writes waiting (each event counts)"},
                    "write_failures": {"type": "integer", "description": "failed write attempts since start"},
                    "dropped": {"type": "integer", "description": "queued events given up to bound the queue"},
                },
            },
            "Server": {
                "type": "object",
                "required": [
                    "name",
                    "state",
                    "reason",
                    "since",
                    "restarts",
                    "sharing",
                    "urls",
                    "sessions",
                    "active_sessions",
                    "clients",
                ],
                "properties": {
                    "name": {"type": "string"},
                    "state": {
                        "type": "string",
                        "enum": ["starting", "healthy", "degraded", "unhealthy", "restarting", "failed", "stopped"],
                    },
                    "reason": {"type": "string"},
                    "since": {"type": "number"},
                    "pid": _nullable("integer"),
                    "uptime": _nullable("number"),
                    "restarts": {"type": "integer"},
                    "sharing": {"type": "string", "enum": ["shared", "session"]},
                    "era": {"type": "string", "enum": ["legacy", "modern"], "nullable": True},
                    "server_info": _nullable("object"),
                    "tools": {**_nullable("integer"), "description": "how many tools the registry lists"},
                    "prompts": _nullable("integer"),
                    "resources": _nullable("integer"),
                    "urls": {"type": "object", "additionalProperties": {"type": "string"}},
                    "enabled": {"type": "boolean", "description": "false: switched off in the config, never started"},
                    "sessions": {"type": "integer"},
                    "active_sessions": {
                        "type": "integer",
                        "description": "sessions with a call in flight, an open GET stream or a request within 60 s",
                    },
                    "clients": {"type": "array", "items": {"type": "string"}},
                    "last_error": {
                        **_nullable("string"),
                        "description": "the reason of its last trouble (degraded, unhealthy, restarting, failed), "
                        "kept after it recovers",
                    },
                    "last_error_at": _nullable("number"),
                    "circuit": {
                        "type": "object",
                        "nullable": True,
                        "description": "The current process's circuit breaker (shared servers with a live process)",
                        "required": ["state", "failures", "refused"],
                        "properties": {
                            "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
                            "failures": {"type": "integer"},
                            "refused": {"type": "integer"},
                        },
                    },
                    "processes": {
                        "type": "object",
                        "nullable": True,
                        "description": "A local server's processes: `live` now; `in_use`, those a session-mode "
                        "server has given to a session or a 2026-07-28 request (its warm spare is live, not in use; "
                        "a shared server's one process is given to nobody: 0); its `max` (max_processes); and the "
                        "sessions and requests `refused` at that cap since the mesh started",
                        "required": ["live", "in_use", "max", "refused"],
                        "properties": {
                            "live": {"type": "integer"},
                            "in_use": {"type": "integer"},
                            "max": {"type": "integer"},
                            "refused": {"type": "integer"},
                        },
                    },
                },
            },
            "ServerDetail": {
                "allOf": [
                    _ref("Server"),
                    {
                        "type": "object",
                        "required": ["stderr_tail", "catalog"],
                        "properties": {
                            "stderr_tail": {"type": "array", "items": {"type": "string"}},
                            "catalog": {
                                "type": "object",
                                "description": "tools, prompts and resources as last read from the server",
                                "additionalProperties": _ref("Listing"),
                            },
                        },
                    },
                ]
            },
            "ControlResult": {
                "type": "object",
                "required": ["action", "changed", "server"],
                "properties": {
                    "action": {"type": "string", "enum": ["restart", "stop", "start"]},
                    "changed": {"type": "boolean"},
                    "server": _ref("Server"),
                },
            },
            "ReloadResult": {
                "type": "object",
                "required": ["reloaded", "added", "removed", "changed", "unchanged", "needs_restart", "failed"],
                "properties": {
                    "reloaded": {"type": "boolean"},
                    "added": {"type": "array", "items": {"type": "string"}},
                    "removed": {"type": "array", "items": {"type": "string"}},
                    "changed": {"type": "array", "items": {"type": "string"}},
                    "unchanged": {"type": "array", "items": {"type": "string"}},
                    "needs_restart": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "[mesh] settings that differ and apply only after a restart",
                    },
                    "failed": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "servers that could not be started, and why",
                    },
                    "refused": {**_nullable("string"), "description": "the config error (file:line: key: problem)"},
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
            "Listing": {
                "type": "object",
                "required": ["count", "hash", "names", "since"],
                "properties": {
                    "count": {"type": "integer"},
                    "hash": {"type": "string", "description": "fingerprint of the whole list"},
                    "names": {"type": "array", "items": {"type": "string"}, "description": "names, or resource uris"},
                    "since": {"type": "number", "description": "when this content was first seen"},
                },
            },
            "Event": {
                "type": "object",
                "required": ["id", "at", "server", "kind", "detail"],
                "properties": {
                    "id": {"type": "integer"},
                    "at": {"type": "number"},
                    "server": _nullable("string"),
                    "kind": {"type": "string"},
                    "detail": {"type": "object"},
                },
            },
            "LogLine": {
                "type": "object",
                "required": ["n", "at", "pid", "text"],
                "properties": {
                    "n": {"type": "integer"},
                    "at": {"type": "number"},
                    "pid": _nullable("integer"),
                    "text": {"type": "string"},
                },
            },
            "Port": {
                "type": "object",
                "required": ["port", "holder", "state"],
                "properties": {
                    "port": {"type": "integer"},
                    "holder": {"type": "string"},
                    "state": {"type": "string", "enum": ["held", "released", "foreign"]},
                    "since": {"type": "number"},
                },
            },
            "ServerStats": {
                "type": "object",
                "required": ["requests", "rate", "errors", "error_rate", "p50", "p99", "in_flight", "series"],
                "properties": {
                    "requests": {"type": "integer", "description": "calls that ended in the last `recent` seconds"},
                    "rate": {"type": "number", "description": "requests per second over the last `recent` seconds"},
                    "errors": {"type": "integer"},
                    "error_rate": {**_nullable("number"), "description": "errors / requests"},
                    "p50": _nullable("number"),
                    "p99": _nullable("number"),
                    "in_flight": {"type": "integer"},
                    "series": {"type": "array", "items": _ref("StatsPoint")},
                },
            },
            "StatsPoint": {
                "type": "object",
                "required": ["at", "requests", "errors", "p50", "p99"],
                "properties": {
                    "at": {"type": "integer", "description": "the point's first second (Unix time)"},
                    "requests": {"type": "integer"},
                    "errors": {"type": "integer"},
                    "p50": _nullable("number"),
                    "p99": _nullable("number"),
                },
            },
            "ConsulHealthEntry": {
                "type": "object",
                "required": ["Node", "Service", "Checks"],
                "properties": {
                    "Node": {"type": "object"},
                    "Service": {"type": "object"},
                    "Checks": {"type": "array", "items": {"type": "object"}},
                },
            },
        }
    },
}
