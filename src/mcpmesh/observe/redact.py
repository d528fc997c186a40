"""The secrets a config holds (env values marked secret, remote headers that carry credentials or
expand variables, and those variables' values), and the one function that hides them in any text
the mesh logs or shows."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from mcpmesh.config import ENV_REFERENCE, MeshConfig, expand_header, expand_references, unset_references
from mcpmesh.errors import HeaderError

MASK = "***"
# Headers whose values are credentials even when written literally into the config.
CREDENTIAL_HEADER = re.compile(r"authorization|cookie|token|secret|password|auth|key", re.IGNORECASE)


class Redactor:
    """Replaces every known secret value in a text with `***`."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.include(secrets)

    def include(self, secrets: Iterable[str]) -> None:
        """Mask these too (a reloaded config's secrets): whoever holds this redactor sees them."""
        self._values |= {s for s in secrets if s}
        # Longest first, so a secret that contains another is masked whole.
        values = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def __bool__(self) -> bool:
        return self._pattern is not None

    @classmethod
    def from_config(cls, config: MeshConfig, environ: Mapping[str, str] | None = None) -> Redactor:
        return cls(secrets_of(config, environ))


def secrets_of(config: MeshConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value the config holds or references."""
    environ = os.environ if environ is None else environ
    secrets: list[str] = []
    for server in config.servers.values():
        for name in server.secret_env:
            if name in server.env:  # a template: its variables' values and what it expands to
                template = server.env[name]
                secrets += [environ[v] for v in _referenced(template) if v in environ]
                if not unset_references(template, environ):
                    secrets.append(expand_references(template, environ))
            elif name in environ:  # passed through (`inherit_env`)
                secrets.append(environ[name])
        for header, template in server.headers.items():
            referenced = _referenced(template)
            if not referenced and not CREDENTIAL_HEADER.search(header):
                continue  # a literal, non-credential value (`Accept-Language: en`) stays readable
            secrets += [environ[v] for v in referenced if v in environ]
            try:
                secrets.append(expand_header(header, template, environ))
            except HeaderError:
                continue  # refused when connecting; nothing of it is sent or logged
    return secrets


def _referenced(template: str) -> list[str]:
    """The variable names a `${NAME}` template refers to."""
    return [match.group(1) for match in ENV_REFERENCE.finditer(template)]
