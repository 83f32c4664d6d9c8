"""The web application, assembled: middlewares, routes, the hub and what runs beside it.

Routes (``endpoints.py``, and ``dialects.py`` for what a dialect adds):
    ``GET|HEAD /cache-healthcheck?``  the platform's health check, answered before anything else
    ``GET /``                         the demo page
    ``GET /static/...``               the browser client
    ``GET /_ws/...``                  WebSocket upgrades, all served by the one shared hub
    ``POST /_publish``                broadcasts for the app's backend (when PUBLISH_TOKEN is set)
    ``GET /metrics``                  Prometheus metrics (when METRICS_TOKEN is set)

and the routes of ``service.py``'s ``setup(app)``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import HttpVersion11, hdrs, web

from . import bench
from .broker import Broker
from .dialects import add_dialects
from .endpoints import (
    STATIC_DIR,
    index,
    is_upgrade,
    metrics_endpoint,
    publish,
    websocket_endpoint,
)
from .guards import Admission, is_websocket_path, origin_allowed
from .handover import SERVER
from .hooks import PUBLISHER_KEY
from .hub import Hub
from .keys import (
    ADMISSION_KEY,
    HUB_KEY,
    METRICS_KEY,
    REFUSALS_KEY,
    SERVICE_KEY,
    SETTINGS_KEY,
    UNJOINED_KEY,
)
from .logs import RefusalLog
from .metrics import Metrics
from .publisher import Publisher, run_producer
from .service import Service
from .settings import SHUTDOWN_SECONDS, WEBSOCKET_PATH_PREFIXES, Settings

logger = logging.getLogger(__name__)

HEALTH_CHECK_PATH = "/cache-healthcheck"
#: Handshake headers an upgrade may carry once only (RFC 6455, section 4.1).
SINGLE_HANDSHAKE_HEADERS = (hdrs.UPGRADE, hdrs.SEC_WEBSOCKET_KEY, hdrs.SEC_WEBSOCKET_VERSION)
#: Seconds of ``SHUTDOWN_SECONDS`` kept for the process's own exit, once the app has stopped.
EXIT_SECONDS = 1.0
#: Seconds between two measures of the event loop's lag.
LOOP_LAG_INTERVAL = 1.0
#: The paths served, as the 404 for an upgrade anywhere else names them.
PATHS_SERVED = " and ".join(f"{prefix}..." for prefix in WEBSOCKET_PATH_PREFIXES)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def health_check_first(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer ``/cache-healthcheck?`` before any other middleware or handler can run."""
    # First and final: the platform's health check never waits for, or depends on, other code.
    if request.path == HEALTH_CHECK_PATH and request.method in (hdrs.METH_GET, hdrs.METH_HEAD):
        return web.Response(text="ok", headers={hdrs.CACHE_CONTROL: "no-store"})
    return await handler(request)


@web.middleware
async def websocket_paths_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a WebSocket upgrade on any path the platform would not route, before any 101."""
    if not is_upgrade(request):
        return await handler(request)
    # Judged on the path as sent and as a normalising proxy would route it (no %2e%2e tricks).
    if not is_websocket_path(request.raw_path, WEBSOCKET_PATH_PREFIXES):
        request.app[METRICS_KEY].refused.labels("path").inc()
        raise web.HTTPNotFound(text=f"WebSocket upgrades are served only on {PATHS_SERVED}\n")
    _check_handshake(request)
    return await handler(request)


def _check_handshake(request: web.Request) -> None:
    """Refuse, before any 101, an upgrade that aiohttp would take but RFC 6455 does not (each
    endpoint then runs aiohttp's own test of it, ``handover.checked_handshake``)."""
    if request.version < HttpVersion11:
        raise web.HTTPBadRequest(text="WebSocket upgrades need HTTP/1.1\n")
    for name in SINGLE_HANDSHAKE_HEADERS:
        if len(request.headers.getall(name, ())) > 1:
            raise web.HTTPBadRequest(text=f"more than one {name} header\n")
    if request.headers.get(hdrs.SEC_WEBSOCKET_VERSION, "").strip() in ("7", "8"):
        # Drafts aiohttp still speaks: RFC 6455 (section 4.4) names the version it wants.
        raise web.HTTPUpgradeRequired(
            text="only WebSocket version 13 is served\n",
            headers={hdrs.UPGRADE: "websocket", hdrs.SEC_WEBSOCKET_VERSION: "13"},
        )


async def set_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Give every response an explicit ``Cache-Control`` and a ``Server`` without versions.

    A static file asked for by a page of an allowed origin (``ALLOWED_ORIGINS``) gets that origin
    in ``Access-Control-Allow-Origin``: a WordPress page may ``import`` the ES-module client.
    """
    response.headers[hdrs.SERVER] = SERVER
    static = request.path.startswith("/static/") and response.status < 400
    origin = request.headers.get(hdrs.ORIGIN)
    if static and origin is not None:
        response.headers.add(hdrs.VARY, hdrs.ORIGIN)  # the edge caches one answer per origin
        allowed = request.app[SETTINGS_KEY].allowed_origins
        if origin_allowed(origin, request.host, allowed):
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
    if hdrs.CACHE_CONTROL not in response.headers:
        # Unversioned static files: short enough that a deploy shows up within minutes.
        response.headers[hdrs.CACHE_CONTROL] = "public, max-age=300" if static else "no-store"


async def _run_hub_services(app: web.Application) -> AsyncIterator[None]:
    """Run the hub's heartbeat and the service's producers for the app's lifetime."""
    settings, hub = app[SETTINGS_KEY], app[HUB_KEY]
    tasks = [
        asyncio.create_task(_send_heartbeats(hub, settings.heartbeat_seconds)),
        asyncio.create_task(_measure_loop_lag(app[METRICS_KEY])),
    ]
    if not settings.bench:  # bench mode broadcasts on demand only
        producers = app[SERVICE_KEY].producers(app[PUBLISHER_KEY])
        tasks += [asyncio.create_task(run_producer(work)) for work in producers]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _send_heartbeats(hub: Hub, interval: float) -> None:
    # Ping every client more often than proxies time out idle connections; drop the silent ones.
    while True:
        await asyncio.sleep(interval)
        await hub.send_heartbeat()


async def _measure_loop_lag(metrics: Metrics) -> None:
    """Every second, how much later than asked the event loop woke up."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + LOOP_LAG_INTERVAL
        await asyncio.sleep(LOOP_LAG_INTERVAL)
        metrics.loop_lag.set(max(0.0, loop.time() - asked))


async def _run_hub(app: web.Application) -> AsyncIterator[None]:
    """Run the hub's broker for the app's lifetime; startup never waits for a remote broker."""
    hub = app[HUB_KEY]
    await hub.start()
    yield
    await hub.stop()


def create_app(settings: Settings, broker: Broker, metrics: Metrics) -> web.Application:
    """Build the application and its one hub, which meets other processes through ``broker``."""
    app = web.Application(middlewares=[health_check_first, websocket_paths_only])
    app[SETTINGS_KEY] = settings
    app[SERVICE_KEY] = Service(settings)
    app[ADMISSION_KEY] = Admission(settings.max_connects_per_second, time.monotonic())
    # One hub per process, shared by every connection (never one per client).
    app[HUB_KEY] = Hub(
        broker,
        replay_size=settings.replay_size,
        channel_replay_size=settings.channel_replay_size,
        max_client_buffer_bytes=settings.max_client_buffer_bytes,
        publishes_per_second=settings.publishes_per_second,
        channel_publishes_per_second=settings.channel_publishes_per_second,
        metrics=metrics,
    )
    # What the service's producers get of the hub: broadcasts, its clients' presence, leases.
    app[PUBLISHER_KEY] = Publisher(app[HUB_KEY], broker.leases, settings.publishes_per_second)
    app[METRICS_KEY] = metrics
    app[REFUSALS_KEY] = RefusalLog(logger)
    app[UNJOINED_KEY] = set()
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    app.cleanup_ctx.append(_run_hub)  # registered first: stopped last, after the producers
    app.cleanup_ctx.append(_run_hub_services)
    # A dialect (Socket.IO) serves the path prefixes it takes; the hub's own protocol the rest.
    taken = add_dialects(app)
    for prefix in WEBSOCKET_PATH_PREFIXES:
        if prefix not in taken:
            app.router.add_get(prefix + "{tail:.*}", websocket_endpoint)
    if settings.publish_token:  # off (404) unless a token is configured
        app.router.add_post("/_publish", publish)
    if settings.metrics_token:  # likewise
        app.router.add_get("/metrics", metrics_endpoint)
    if settings.bench:
        bench.setup(app, app[HUB_KEY])  # its runs are cancelled before the hub stops
    app.on_response_prepare.append(set_response_headers)
    app[SERVICE_KEY].setup(app)
    # Whatever setup added, the platform's health check stays answered first.
    app.middlewares.remove(health_check_first)
    app.middlewares.insert(0, health_check_first)
    return app


async def shutdown(runner: web.AppRunner, server: asyncio.Server) -> None:
    """Stop the app of ``runner``, served by ``server``, within ``SHUTDOWN_SECONDS``: drain,
    close, clean up.

    Drain: new WebSockets are refused (503) and the connected ones closed with 1012 over
    ``DRAIN_SECONDS``, so that their reconnects reach the other containers spread out, not in
    one wave; the health check keeps answering meanwhile. Close: the WebSockets that are left
    get 1001, each closing handshake within ``CLOSE_TIMEOUT``; the server stops listening, and
    waits for open requests (``runner``'s ``shutdown_timeout``: half the budget at most, as the
    drain). Clean up: the producers stop, then the hub's broker (``cleanup_ctx``). Whatever is
    left when only ``EXIT_SECONDS`` of the budget remain is abandoned.
    """
    app = runner.app
    try:
        async with asyncio.timeout(SHUTDOWN_SECONDS - EXIT_SECONDS):
            await app[HUB_KEY].drain(app[SETTINGS_KEY].drain_seconds)
            # Deploys stop the process: any client left reconnects to the next one.
            await app[HUB_KEY].close_all()
            server.close()
            await runner.cleanup()
    except TimeoutError:
        logger.warning(
            "shutdown took longer than %.0f s: abandoned", SHUTDOWN_SECONDS - EXIT_SECONDS
        )
