"""Sealed `requestState` for input-required results: integrity-protected (HMAC-SHA256), bound to
the caller and the request it answers, and short-lived. Clients treat it as opaque; the gateway
treats what comes back as attacker-controlled until the seal checks out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from mcpmesh.errors import StateRejected

PREFIX = "mcpmesh1."
REQUEST_STATE_TTL = 120.0  # seconds a client has to answer an input request and retry


@dataclass(frozen=True)
class Sealed:
    handle: str  # which suspended call this state resumes
    caller: str  # who may resume it
    method: str  # the request it belongs to ...
    name: str | None  # ... and its tool/prompt name or resource uri


class RequestStateSealer:
    """Seals and opens request states with a per-process random key."""

    def __init__(self, key: bytes | None = None, ttl: float = REQUEST_STATE_TTL):
        self._key = key or secrets.token_bytes(32)
        self.ttl = ttl

    def seal(self, state: Sealed) -> str:
        payload = orjson.dumps(
            {"h": state.handle, "c": state.caller, "m": state.method, "n": state.name, "e": time.time() + self.ttl}
        )
        return PREFIX + _b64(payload) + "." + _b64(self._mac(payload))

    def open(self, token: str, caller: str, method: str, name: str | None) -> Sealed:
        """The sealed state, if authentic, current, this caller's and for this request."""
        fields = self._authentic(token)
        if not hmac.compare_digest(fields["c"], caller):
            raise StateRejected("requestState belongs to another caller")
        if (fields["m"], fields["n"]) != (method, name):
            raise StateRejected("requestState belongs to another request")
        return Sealed(fields["h"], fields["c"], fields["m"], fields["n"])

    def handle_of(self, token: str) -> str | None:
        """Which suspended call an authentic, current state resumes (None if it is not one of
        ours): enough to find where the call waits; `open` still checks who resumes it."""
        try:
            return str(self._authentic(token)["h"])
        except StateRejected:
            return None

    def _authentic(self, token: str) -> dict[str, Any]:
        if not token.startswith(PREFIX) or token.count(".") != 2:
            raise StateRejected("requestState was not issued by this gateway")
        body, mac = token[len(PREFIX) :].split(".")
        try:
            payload, signature = _unb64(body), _unb64(mac)
        except ValueError as exc:
            raise StateRejected("requestState is malformed") from exc
        if not hmac.compare_digest(signature, self._mac(payload)):
            raise StateRejected("requestState failed its integrity check")
        fields = orjson.loads(payload)
        if fields["e"] < time.time():
            raise StateRejected("requestState has expired")
        return fields  # type: ignore[no-any-return]

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc
