"""Logs: one line per event on stderr, where the platform collects them, as text or JSON.

With ``LOG_FORMAT=json`` every line is one JSON object: ``time``, ``level``, ``logger`` and
``message``, plus ``connection`` (an id of the WebSocket connection) and ``client`` (its address,
from ``X-Forwarded-For`` behind the platform's proxy) for what happens on a connection, and
``exception`` with the traceback when there is one. Nothing secret is ever logged: no token, no
password, no query string.

Nothing a client sends can forge a line either: in both formats, line separators (CR, LF, U+0085,
U+2028, U+2029) and the controls that reorder text on screen (bidi: U+202A-U+202E, U+2066-U+2069,
U+200E, U+200F, U+061C) are written as escapes (``\\u2028``), except the line breaks of a
traceback. And a refusal repeated by a flood of upgrades is one line per reason and per
``REFUSALS_INTERVAL`` seconds, with the count of the others (:class:`RefusalLog`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

#: The connection a log line is about (``connection`` and ``client``), set per WebSocket handler.
CONNECTION: ContextVar[dict[str, str] | None] = ContextVar("connection", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: What a line-based reader could take for the end of a line, or what reorders text on screen.
_FORGERS = (
    "\r\n\x85\u2028\u2029"  # line separators
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"  # bidi controls
)
_FORGER = re.compile(f"[{_FORGERS}]")
_FORGER_BUT_LF = re.compile(f"[{_FORGERS.replace(chr(10), '')}]")
#: Seconds over which the refusals of one reason are logged as one line, then a count.
REFUSALS_INTERVAL = 10.0


def escape(text: str, *, keep_newlines: bool = False) -> str:
    """``text``, line separators and bidi controls as ``\\uXXXX`` (LF kept if ``keep_newlines``)."""
    pattern = _FORGER_BUT_LF if keep_newlines else _FORGER
    return pattern.sub(lambda match: f"\\u{ord(match[0]):04x}", text)


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
        # JSON leaves U+0085, U+2028, U+2029 and the bidi controls raw when not ASCII-only.
        return escape(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """The readable one-line format, with the connection a line is about, if any."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The first line, with whatever a client sent in it escaped."""
        return escape(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        """The traceback, its own line breaks kept, whatever a client sent in it escaped."""
        return escape(super().formatException(ei), keep_newlines=True)

    def format(self, record: logging.LogRecord) -> str:
        """The record as text, followed by ``[connection client]`` when it is about one."""
        line = super().format(record)
        connection = CONNECTION.get()
        if connection is None:
            return line
        first, newline, rest = line.partition("\n")
        tags = escape(" ".join(connection.values()))
        return f"{first} [{tags}]{newline}{rest}"


class RefusalLog:
    """Refusals logged as one line per reason per ``REFUSALS_INTERVAL``, then how many more.

    A flood of upgrades refused for one reason (another origin, too many connections...) would
    otherwise write a line each: the first of an interval is logged at once, with its connection;
    the others are counted, and their number logged at the end of the interval.

    Args:
        logger: Where the lines go.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._more: dict[str, int] = {}  # reason -> refusals since its last line

    def refused(self, level: int, reason: str, message: str, *args: object) -> None:
        """Log ``message % args``, or count it if ``reason`` was logged in this interval."""
        if reason in self._more:
            self._more[reason] += 1
            return
        self._logger.log(level, message, *args)
        self._more[reason] = 0
        # Not about the connection that came first: run outside its logging context.
        asyncio.get_running_loop().call_later(
            REFUSALS_INTERVAL, self._summarize, level, reason, context=contextvars.Context()
        )

    def _summarize(self, level: int, reason: str) -> None:
        more = self._more.pop(reason, 0)
        if more:
            self._logger.log(
                level, "%d more refused (%s) in the last %.0f s", more, reason, REFUSALS_INTERVAL
            )


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
