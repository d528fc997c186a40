"""The /v1 JSON API (routes.py) and its OpenAPI document (openapi.py): what the mesh observed about
each server, its sessions, ports and events, and operator control.

May import: observe, supervision, front (its responses), router, registry, errors."""
