"""The protocol revisions the gateway serves, and how a handshake-era client's is negotiated
(Lifecycle, Version Negotiation: https://modelcontextprotocol.io/specification/2025-11-25/basic/lifecycle)."""

from __future__ import annotations

from typing import Any

LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
"""Handshake-era revisions the HTTP front negotiates, newest first."""
MODERN_VERSION = "2026-07-28"
MODERN_VERSIONS = (MODERN_VERSION,)
"""Stateless revisions: no handshake, each request carries its `_meta` envelope."""


def negotiate_version(requested: Any) -> str:
    """The client's version if served here, else the newest we serve (spec lifecycle rule)."""
    return requested if requested in LEGACY_VERSIONS else LEGACY_VERSIONS[0]
