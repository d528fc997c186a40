"""The secrets a config holds (env values marked secret, remote headers that carry credentials or
expand variables, values of credential-named flags and token-shaped words in `args`, and those
variables' values), and the one function that hides them, and their encodings, in any text the mesh
logs or shows."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import quote, quote_plus

from mcpmesh.config import ENV_REFERENCE, MeshConfig, expand_header, expand_references, unset_references
from mcpmesh.errors import HeaderError

MASK = "***"
# Headers whose values are credentials even when written literally into the config.
CREDENTIAL_HEADER = re.compile(r"authorization|cookie|token|secret|password|auth|key", re.IGNORECASE)
# Flags in `args` whose value is a credential: `--token=VALUE` or `--token VALUE`. Narrower than the
# header rule (no bare `auth` or `key`): a value found here is masked wherever it appears, so
# `--auth-port 8080` must not make every "8080" in the log disappear.
CREDENTIAL_FLAG = re.compile(
    r"^--?[\w-]*(?:token|secret|password|passwd|api[-_]?key|access[-_]?key|private[-_]?key|credential|bearer)[\w-]*$",
    re.IGNORECASE,
)
# Words in `args` shaped like well-known issuers' tokens (GitHub, OpenAI/Anthropic, Slack, GitLab, AWS).
TOKEN_SHAPE = re.compile(r"(?:gh[pousr]_|github_pat_|sk-|xox[abprs]-|glpat-|AKIA)[A-Za-z0-9_-]{8,}")
PARTIAL_MIN = 4  # a text ending in this many or more first characters of a secret is masked there (a cut)
BASE64_MIN = 8  # base64 forms shorter than this would mask innocent words
BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")


class Redactor:
    """Replaces every known secret value in a text with `***`: as written, percent-encoded, in
    base64 (`Basic` credentials: the whole base64 word goes), and a secret's beginning where a
    text ends (a line cut inside it)."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._values: set[str] = set()
        self._forms: list[str] = []
        self._base64: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.include(secrets)

    def include(self, secrets: Iterable[str]) -> None:
        """Mask these too (a reloaded config's secrets): whoever holds this redactor sees them."""
        self._values |= {s for s in secrets if s}
        plain = {form for value in self._values for form in _percent_forms(value)}
        self._base64 = {form for value in self._values for form in _base64_forms(value)} - plain
        # Longest first, so a secret that contains another is masked whole.
        self._forms = sorted(plain | self._base64, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, self._forms))) if self._forms else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        if self._base64:
            text = self._mask_base64_words(text)
        return self._mask_cut(self._pattern.sub(MASK, text))

    def _mask_base64_words(self, text: str) -> str:
        """Mask the whole base64 word around a secret's base64 form: its edges hold bits of the
        secret too, and the rest is what it was sent with (`user:` in `Basic` credentials)."""
        assert self._pattern is not None
        parts: list[str] = []
        done = 0
        for match in self._pattern.finditer(text):
            if match.group() not in self._base64 or match.start() < done:
                continue
            start, end = match.start(), match.end()
            while start > done and text[start - 1] in BASE64_ALPHABET:
                start -= 1
            while end < len(text) and text[end] in BASE64_ALPHABET:
                end += 1
            word_end = end
            while end < len(text) and end - word_end < 2 and text[end] == "=":  # its padding
                end += 1
            parts += [text[done:start], MASK]
            done = end
        return "".join(parts) + text[done:] if parts else text

    def _mask_cut(self, text: str) -> str:
        """Mask a secret's beginning (PARTIAL_MIN characters or more) at the very end of a text."""
        cut = len(text)
        for form in self._forms:
            if len(form) <= PARTIAL_MIN:
                continue
            tail_from = max(0, len(text) - len(form) + 1)
            head = form[:PARTIAL_MIN]
            at = text.find(head, tail_from)
            while at != -1 and at < cut:
                if form.startswith(text[at:]):
                    cut = at
                    break
                at = text.find(head, at + 1)
        return text if cut == len(text) else text[:cut] + MASK

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
        secrets += secret_args(server.args)
    return secrets


def secret_args(args: Sequence[str]) -> list[str]:
    """The credentials in a command line: values of credential-named flags (`--token=V`,
    `--api-key V`) and words shaped like well-known tokens."""
    found: list[str] = []
    for i, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        if CREDENTIAL_FLAG.match(flag):
            if equals:
                found.append(value)
            elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                found.append(args[i + 1])
        found += TOKEN_SHAPE.findall(arg)
    return found


def _percent_forms(secret: str) -> set[str]:
    """The secret as written and as URLs and form bodies carry it (upper- and lower-case escapes)."""
    forms = {secret, quote(secret), quote(secret, safe=""), quote_plus(secret), quote_plus(secret, safe="")}
    forms |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), form) for form in forms}
    return forms


def _base64_forms(secret: str) -> set[str]:
    """The base64 characters that the secret alone decides, wherever it starts in the encoded
    bytes (three alignments), in the standard and the URL-safe alphabet."""
    data = secret.encode()
    forms: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        first, end = -(-8 * offset // 6), 8 * (offset + len(data)) // 6  # chars made of secret bits only
        core = encoded[first:end]
        if len(core) >= BASE64_MIN:
            forms |= {core, core.replace("+", "-").replace("/", "_")}
    return forms


def _referenced(template: str) -> list[str]:
    """The variable names a `${NAME}` template refers to."""
    return [match.group(1) for match in ENV_REFERENCE.finditer(template)]
