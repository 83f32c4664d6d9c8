"""Start the server: ``python -m <package>`` (or the project's console script)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import resource
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web, web_response
from dotenv import dotenv_values, load_dotenv
from dotenv.parser import parse_stream

from . import logs
from .app import create_app, shutdown
from .broker import Broker
from .handover import SERVER, HttpFront
from .metrics import Metrics
from .scaleout import create_broker
from .settings import SHUTDOWN_SECONDS, Settings, SettingsError

logger = logging.getLogger(__package__)

#: Seconds a connection may take to send a whole request, or stay idle between two requests.
IDLE_TIMEOUT = 5.0


class ListenError(RuntimeError):
    """The server cannot listen where it was told to."""


async def serve(settings: Settings, broker: Broker, metrics: Metrics) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    app = create_app(settings, broker, metrics)
    # aiohttp's own answers (400 to a request it cannot parse), which no handler or signal of
    # the app sees, name no software or version either: its default for a missing Server.
    web_response.SERVER_SOFTWARE = SERVER  # type: ignore[attr-defined]
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        # Requests still open once the WebSockets are closed get half the shutdown's budget at
        # most, as the drain (app.shutdown).
        shutdown_timeout=SHUTDOWN_SECONDS / 2,
        # Half-sent requests and idle keep-alive connections are closed (no slowloris).
        keepalive_timeout=IDLE_TIMEOUT,
    )
    await runner.setup()
    http = runner.server
    assert http is not None  # made by setup()
    _calm_the_garbage_collector()
    loop = asyncio.get_running_loop()
    try:
        # Plain HTTP on all interfaces: the platform terminates TLS in front of the app. Every
        # connection is aiohttp's until a WebSocket handshake on /_ws/ hands it over.
        server = await loop.create_server(
            lambda: HttpFront(http()),
            settings.host,
            settings.port,
            backlog=2048,
            reuse_address=True,
        )
    except OSError as error:
        await runner.cleanup()
        reason = error.strerror or str(error)
        raise ListenError(f"cannot listen on {settings.host}:{settings.port}: {reason}") from None
    logger.info("listening on http://%s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Deploys send SIGTERM: close WebSockets with 1012 over DRAIN_SECONDS (1001 for any
        # left), stop, exit within the platform's 10 s.
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("shutting down")
    await shutdown(runner, server)
    logger.info("stopped")


def _calm_the_garbage_collector() -> None:
    """Keep the cyclic garbage collector's work small with thousands of connections.

    Each connection brings about 70 objects the collector tracks. With Python's defaults, a wave
    of 5,000 connections spent a quarter of its time in the collector, in pauses of up to 83 ms;
    with these settings, 5 % (vip-skeleton's fan-out benchmark). What start-up made (modules,
    the app) lives as long as the process: frozen, no collection looks at it again. The youngest
    objects are collected every 10,000 allocations instead of 700, so the full collections that
    scan every connection's objects come far less often.
    """
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(10_000, middle, oldest)


def _fastest_event_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's loop factory where uvloop is installed (not on Windows), else None."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _read_dotenv(path: Path) -> set[str]:
    """Set the variables of ``path`` that the environment does not; return their names.

    Does nothing when ``path`` does not exist.

    Raises:
        SettingsError: a line is neither ``NAME=value``, a comment nor blank (python-dotenv would
            only warn and skip it, and the app would start without that setting).
    """
    if not path.is_file():
        return set()
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                line = binding.original.string.strip()
                raise SettingsError(
                    f"{path} line {binding.original.line}: {line!r} is not NAME=value"
                )
    from_file = set(dotenv_values(path)) - set(os.environ)
    load_dotenv(path, override=False)
    return from_file


def main() -> None:
    """Read the settings, configure logging and run the server."""
    _raise_file_limit()
    # A local run reads .env; the platform's environment (and any real variable) always wins.
    dotenv = Path.cwd() / ".env"
    from_dotenv: set[str] = set()
    try:
        from_dotenv = _read_dotenv(dotenv)
        settings = Settings.from_environ()
        metrics = Metrics()
        broker = create_broker(settings, os.environ, metrics)
    except SettingsError as error:
        sys.exit(_settings_error(error, dotenv, from_dotenv))
    # Logs go to stderr, one line per event: the platform collects stdout and stderr.
    logs.configure(settings.log_level, settings.log_format)
    with asyncio.Runner(loop_factory=_fastest_event_loop()) as runner:
        try:
            runner.run(serve(settings, broker, metrics))
        except ListenError as error:
            sys.exit(f"error: {error}")
        except SettingsError as error:  # a setting of service.py's, read as create_app made it
            sys.exit(_settings_error(error, dotenv, from_dotenv))


def _settings_error(error: SettingsError, dotenv: Path, from_dotenv: set[str]) -> str:
    """The one line a bad setting stops the process with, naming ``dotenv`` if it set it."""
    named = re.match(r"[A-Z][A-Z0-9_]*", str(error))
    where = f" (set in {dotenv})" if named and named.group() in from_dotenv else ""
    return f"error: {error}{where}"


def _raise_file_limit() -> None:
    """Let the process open as many files as its hard limit allows: one per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit, say
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    main()
