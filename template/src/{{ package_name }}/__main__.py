"""Start the server: ``python -m <package>`` (or the project's console script)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from .app import create_app
from .broker import Broker
from .scaleout import create_broker
from .settings import Settings, SettingsError

logger = logging.getLogger(__package__)

#: Seconds the server waits for open requests after SIGTERM, well inside ``docker stop``'s 10 s.
SHUTDOWN_TIMEOUT = 5.0


async def serve(settings: Settings, broker: Broker) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    runner = web.AppRunner(
        create_app(settings, broker),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    # Plain HTTP on all interfaces: the platform terminates TLS in front of the app.
    site = web.TCPSite(runner, settings.host, settings.port, backlog=2048, reuse_address=True)
    await site.start()
    logger.info("listening on http://%s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Deploys send SIGTERM: stop accepting, close WebSockets with 1001, exit within 10 s.
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("shutting down")
    await runner.cleanup()
    logger.info("stopped")


def _fastest_event_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's loop factory where uvloop is installed (not on Windows), else None."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    """Read the settings, configure logging and run the server."""
    try:
        settings = Settings.from_environ()
        broker = create_broker(settings, os.environ)
    except SettingsError as error:
        sys.exit(f"error: {error}")
    # Logs go to stderr, one line per event: the platform collects stdout and stderr.
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    with asyncio.Runner(loop_factory=_fastest_event_loop()) as runner:
        runner.run(serve(settings, broker))


if __name__ == "__main__":
    main()
