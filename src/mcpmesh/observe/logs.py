"""How `mcpmesh up` logs: human-readable lines or one JSON object per line, every record (uvicorn's
too) passed through the secret mask, and each server's stderr lines tagged with its name."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Literal, TextIO

import orjson

LogFormat = Literal["text", "json"]
SERVER_LOGGER = "mcpmesh.server."  # stderr lines are logged as mcpmesh.server.<name>
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Masks secrets in the finished message and any traceback, before a handler formats it.
    On the handler, not a logger: logger filters do not apply to records of child loggers."""

    def __init__(self, redact: Callable[[str], str]):
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and server when the record is about one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        server = getattr(record, "server", None) or _server_of(record.name)
        if server:
            entry["server"] = server
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return orjson.dumps(entry).decode()


def _server_of(logger: str) -> str | None:
    return logger[len(SERVER_LOGGER) :] if logger.startswith(SERVER_LOGGER) else None


def configure(fmt: LogFormat, level: str, redact: Callable[[str], str], stream: TextIO | None = None) -> None:
    """Send every log record to stderr (or `stream`) in `fmt`, secrets masked."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request to a remote server is noise
