"""The app's endpoints: the page, WebSockets on ``/_ws/...``, ``/_publish`` and ``/metrics``.

Also what every WebSocket endpoint shares (``socketio_server.py`` too, when there is one): the
one upgrade test, admission (draining, origin, limits), the service's ``authenticate``, the
connection's name in the log, the client's WebSocket and the opening of its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import math
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .broker import PublishInProgress
from .guards import Allowance, client_address, is_valid_channel, origin_allowed, parse_json
from .handover import HandedOver, checked_handshake, hand_over
from .hooks import BEARER_PROTOCOL, Connection, connection_token
from .hub import Client, HubUnavailable
from .inbound import RawClient
from .keys import (
    ADMISSION_KEY,
    HUB_KEY,
    METRICS_KEY,
    REFUSALS_KEY,
    SERVICE_KEY,
    SETTINGS_KEY,
    UNJOINED_KEY,
)
from .logs import CONNECTION
from .session import Session, broadcast_within_budget, eagerly

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
X_FORWARDED_FOR = "X-Forwarded-For"
#: ``POST /_publish`` broadcasts once per key: a retry after a lost answer sends nothing again.
IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
#: Seconds the service's ``authenticate`` hook may take, from its first wait, before the upgrade is
#: refused with 503 (one that answers without waiting, as the default does, costs no timer).
AUTHENTICATE_TIMEOUT = 5.0


async def index(request: web.Request) -> web.FileResponse:
    """Serve the demo page; the edge may cache it for a minute."""
    return web.FileResponse(
        STATIC_DIR / "index.html", headers={hdrs.CACHE_CONTROL: "public, max-age=60"}
    )


def is_upgrade(request: web.Request) -> bool:
    """Whether ``request`` asks for a WebSocket (``Upgrade: websocket``), well-formed or not."""
    return request.headers.get(hdrs.UPGRADE, "").strip().lower() == "websocket"


async def websocket_endpoint(request: web.Request) -> web.StreamResponse:
    """Upgrade to a WebSocket and attach it to the shared hub until it closes.

    A reconnecting client may pass ``?last_id=N`` to receive the broadcasts it missed. Refused
    before any 101: a plain GET (426), a page of another origin (403), a process that is draining,
    at ``MAX_CONNECTIONS`` or past ``MAX_CONNECTS_PER_SECOND`` (503), a connection the service's
    ``authenticate`` refuses (401 or 403), and a malformed ``last_id`` or handshake (400).
    Admission comes first and costs a refused client nothing but its headers: no
    authentication, no parsing of its query beyond ``last_id``'s presence.
    """
    if not is_upgrade(request):
        if connection_token(request) is not None:
            # Browsers hide why a handshake failed: the browser client asks here whether its
            # token is the reason (401), with the token in Authorization.
            await authenticate(request)
        # A plain GET on a WebSocket path must never become a cacheable 200.
        raise web.HTTPUpgradeRequired(
            text="This path serves WebSocket connections only.\n",
            headers={hdrs.UPGRADE: "websocket"},
        )
    # aiohttp's test of the handshake, before admission and authentication.
    ready = checked_handshake(request, (BEARER_PROTOCOL,))
    with named_connection(request) as about:
        admit(request, about["client"])
        try:
            last_id = int(request.query["last_id"]) if "last_id" in request.query else None
        except ValueError:
            raise web.HTTPBadRequest(text="last_id must be an integer\n") from None
        identity = await authenticate(request)
        settings, hub = request.app[SETTINGS_KEY], request.app[HUB_KEY]
        allowance = Allowance(
            settings.client_messages_per_second,
            settings.client_bytes_per_second,
            asyncio.get_running_loop().time(),
        )
        # Every frame counts against the client's allowance; 1009 past MAX_MESSAGE_BYTES.
        client = RawClient(
            allowance, max_message_bytes=settings.max_message_bytes, heard=hub.heard, about=about
        )
        try:
            # After the 101, the connection is the client's own protocol's, not aiohttp's.
            received = hand_over(request, ready, client)
        except ConnectionResetError:  # the client went away during the handshake
            return HandedOver()
        transport = client.transport
        assert transport is not None  # given by the handover
        session = open_session(request, client, transport, about["connection"], identity)
        session.join(last_id)
        client.start(session, received)
        return HandedOver()


@contextlib.contextmanager
def named_connection(request: web.Request) -> Iterator[dict[str, str]]:
    """Name the connection of ``request`` in every log line about it; yield its name
    (``connection``: its id, and ``client``)."""
    # Every log line about this connection names it, and its client behind the platform's proxy;
    # the next request on a refused connection's keep-alive is not about it any more.
    about = {"connection": secrets.token_hex(4), "client": _client_address(request)}
    token = CONNECTION.set(about)
    try:
        yield about
    finally:
        CONNECTION.reset(token)


def _client_address(request: web.Request) -> str:
    """The client's address as the trusted proxies saw it (``TRUSTED_PROXY_HOPS``), never an
    ``X-Forwarded-For`` entry the client wrote itself."""
    forwarded_for = ",".join(request.headers.getall(X_FORWARDED_FOR, ()))
    hops = request.app[SETTINGS_KEY].trusted_proxy_hops
    return client_address(request.remote, forwarded_for, hops)


def open_session(
    request: web.Request,
    ws: Client,
    transport: asyncio.Transport,
    connection_id: str,
    identity: str | None,
) -> Session:
    """Open the session of a client whose WebSocket ``ws`` is prepared; it has not joined yet.

    The session's connection sends to its client alone (``Connection.send``), publishes within the
    budgets of clients' publishes (``Connection.broadcast``), and is closed with 4001 when its token
    expires or ``MAX_CONNECTION_SECONDS`` are over. The caller joins it to the hub
    (:meth:`~.session.Session.join`), asks the service's ``on_connect``
    (:meth:`~.session.Session.open`), then closes it (:meth:`~.session.Session.close`) and tells
    ``on_disconnect`` (:meth:`~.session.Session.ended`).
    """
    settings, hub = request.app[SETTINGS_KEY], request.app[HUB_KEY]
    connection = Connection(
        connection_id,
        identity,
        request,
        lambda data: hub.send(ws, {"type": "message", "data": data}),
        functools.partial(broadcast_within_budget, hub),
    )
    logger.debug("connection of %s", identity or "an anonymous client")
    return Session(
        hub,
        request.app[SERVICE_KEY],
        ws,
        transport,
        connection,
        max_subscriptions=settings.max_subscriptions,
        max_new_channels_per_minute=settings.max_new_channels_per_minute,
        max_connection_seconds=settings.max_connection_seconds,
    )


def admit(request: web.Request, address: str) -> None:
    """Refuse a new WebSocket while draining, from another origin, or past the limits of its
    client's ``address`` (as :func:`named_connection` names it)."""
    settings, hub = request.app[SETTINGS_KEY], request.app[HUB_KEY]
    refused = request.app[METRICS_KEY].refused
    if hub.draining:
        refused.labels("draining").inc()
        raise web.HTTPServiceUnavailable(
            text="restarting, try again\n", headers={hdrs.RETRY_AFTER: "1"}
        )
    origin = request.headers.get(hdrs.ORIGIN)
    # The app's own origins are OWN_ORIGINS (a DNS-rebinding page chooses Host, and any client
    # X-Forwarded-Host), or else the Host of a request to an IP address or localhost.
    allowed = settings.own_origins | settings.allowed_origins
    if origin is not None and not origin_allowed(origin, request.host, allowed):
        # Any web page could otherwise open a WebSocket in its visitors' browsers.
        refused.labels("origin").inc()
        request.app[REFUSALS_KEY].refused(
            logging.WARNING,
            "origin",
            "refused a WebSocket from origin %.100r (not in OWN_ORIGINS or ALLOWED_ORIGINS)",
            origin,
        )
        raise web.HTTPForbidden(text="this origin may not open WebSockets here\n")
    # The WebSockets not in the hub yet count from their 101 too.
    connections = hub.client_count + len(request.app[UNJOINED_KEY])
    if connections >= settings.max_connections:
        refused.labels("max_connections").inc()
        request.app[REFUSALS_KEY].refused(
            logging.WARNING,
            "max_connections",
            "refused a WebSocket: %d connections (MAX_CONNECTIONS)",
            connections,
        )
        raise web.HTTPServiceUnavailable(
            text="too many connections, try again\n", headers={hdrs.RETRY_AFTER: "5"}
        )
    # Fair shares per client address, as the platform's proxy saw it (X-Forwarded-For).
    # A client coming back after a drop (last_id, a token) may use the margin kept for it.
    returning = "last_id" in request.query or connection_token(request) is not None
    wait = request.app[ADMISSION_KEY].admit(address, returning, time.monotonic())
    if wait:
        # A reconnect wave is let in at MAX_CONNECTS_PER_SECOND; the rest are told when a
        # place will be there for them, each a later one, so that they come back spread out.
        refused.labels("rate").inc()
        raise web.HTTPServiceUnavailable(
            text="too many new connections, try again\n",
            headers={hdrs.RETRY_AFTER: str(max(1, math.ceil(wait)))},
        )


async def authenticate(request: web.Request) -> str | None:
    """Who is connecting, as the service's ``authenticate`` says; refused, before any 101."""
    refused = request.app[METRICS_KEY].refused
    try:
        authenticating = request.app[SERVICE_KEY].authenticate(request)
        identity: str | None = await eagerly(authenticating, within=AUTHENTICATE_TIMEOUT)
    except TimeoutError:
        logger.warning("authenticate took longer than %.0f s", AUTHENTICATE_TIMEOUT)
        raise web.HTTPServiceUnavailable(text="try again\n") from None
    except web.HTTPException as refusal:
        refused.labels("authenticate").inc()
        request.app[REFUSALS_KEY].refused(
            logging.INFO,
            f"authenticate {refusal.status}",
            "refused a WebSocket: %d from the service's authenticate",
            refusal.status,
        )
        raise
    return identity


async def publish(request: web.Request) -> web.Response:
    """Broadcast the JSON body to every client of every process, or on ``?channel=C``.

    For the app's own backend: ``Authorization: Bearer <PUBLISH_TOKEN>`` is required. Answers
    ``{"id": <broadcast id>}``; 401 on a bad token, 413 past ``MAX_PUBLISH_BYTES``, 400 on a body
    that is not JSON or a malformed channel, 503 while the message broker is unavailable.

    With ``Idempotency-Key: K`` (1-128 letters, digits or ``_.:-``), a key seen already (the
    newest 100,000 of a process, or for as long as a shared broker keeps them) answers with its
    first publish's id and ``"duplicate": true``, and broadcasts nothing; 409 while that first
    publish is under way.
    """
    settings = request.app[SETTINGS_KEY]
    no_store = {hdrs.CACHE_CONTROL: "no-store"}
    _require_bearer(request, settings.publish_token)
    channel = request.query.get("channel")
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise web.HTTPBadRequest(
            text="the Idempotency-Key must be 1-128 letters, digits or _.:-\n", headers=no_store
        )
    if channel is not None and not is_valid_channel(channel):
        raise web.HTTPBadRequest(
            text="the channel must be 1-128 letters, digits or _.:@/-\n", headers=no_store
        )
    limit = settings.max_publish_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    try:
        data = parse_json(bytes(body))
    except ValueError as error:
        raise web.HTTPBadRequest(
            text=f"the body must be JSON: {error}\n", headers=no_store
        ) from None
    hub = request.app[HUB_KEY]
    try:
        if key is None:
            message_id, first = await hub.broadcast(data, channel), True
        else:
            message_id, first = await hub.broadcast_once(key, data, channel)
    except HubUnavailable as error:
        logger.warning("publish failed: %s", error)
        raise web.HTTPServiceUnavailable(
            text="broadcasts are unavailable, try again\n", headers=no_store
        ) from None
    except PublishInProgress:
        raise web.HTTPConflict(
            text="a publish with this Idempotency-Key is under way, try again\n",
            headers={**no_store, hdrs.RETRY_AFTER: "1"},
        ) from None
    answer: dict[str, object] = (
        {"id": message_id} if first else {"id": message_id, "duplicate": True}
    )
    return web.json_response(answer, headers=no_store)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """The process's metrics in Prometheus's text format, for ``Bearer <METRICS_TOKEN>``."""
    _require_bearer(request, request.app[SETTINGS_KEY].metrics_token)
    return web.Response(
        body=generate_latest(request.app[METRICS_KEY].registry),
        headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST, hdrs.CACHE_CONTROL: "no-store"},
    )


def _require_bearer(request: web.Request, expected: str) -> None:
    """Refuse with 401 unless ``Authorization: Bearer <expected>`` (compared in constant time)."""
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise web.HTTPUnauthorized(
            text="a valid bearer token is required\n",
            headers={hdrs.CACHE_CONTROL: "no-store", hdrs.WWW_AUTHENTICATE: "Bearer"},
        )
