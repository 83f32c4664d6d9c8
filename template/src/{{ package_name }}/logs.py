"""Logs: one line per event on stderr, where the platform collects them, as text or JSON.

With ``LOG_FORMAT=json`` every line is one JSON object: ``time``, ``level``, ``logger`` and
``message``, plus ``connection`` (an id of the WebSocket connection) and ``client`` (its address,
from ``X-Forwarded-For`` behind the platform's proxy) for what happens on a connection, and
``exception`` with the traceback when there is one. Nothing secret is ever logged: no token, no
password, no query string.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

#: The connection a log line is about (``connection`` and ``client``), set per WebSocket handler.
CONNECTION: ContextVar[dict[str, str] | None] = ContextVar("connection", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON, with the connection it is about, if any."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **(CONNECTION.get() or {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The readable one-line format, with the connection a line is about, if any."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The record as text, followed by ``[connection client]`` when it is about one."""
        line = super().format(record)
        connection = CONNECTION.get()
        if connection is None:
            return line
        first, newline, rest = line.partition("\n")
        tags = " ".join(connection.values())
        return f"{first} [{tags}]{newline}{rest}"


class OneLineBadRequests(logging.Filter):
    """Log a request that aiohttp cannot parse as one line, without its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the traceback of a malformed request by its first line."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            reason = str(error.message).strip().splitlines()[0] if error.message else error.code
            record.msg = f"{record.getMessage()}: {error.code} {reason}"
            record.args = None
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure(level: str, log_format: str) -> None:
    """Log at ``level`` to stderr, in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("aiohttp.server").addFilter(OneLineBadRequests())
