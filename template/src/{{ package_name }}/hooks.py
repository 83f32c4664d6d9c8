"""What the app asks the service about each connection, and the answers it gets by default.

:class:`Hooks` holds every hook with its default answer. The project's own ``service.py`` (yours,
never changed by ``copier update``) subclasses it and overrides the hooks it needs; a hook added by
a later template version arrives here with a default, so an older ``service.py`` keeps working.

Where each seam is: per connection, :meth:`Hooks.on_connect` and :meth:`Hooks.on_disconnect`;
per request, the ``authorize_*`` hooks, :meth:`Hooks.prepare_publish` (what a client's publish
sends) and :meth:`Hooks.on_message` (which may publish with :meth:`Connection.broadcast`); for the
app, :meth:`Hooks.setup` (routes, middlewares and ``cleanup_ctx`` of your own, which publish
through ``app[PUBLISHER_KEY]``) and :meth:`Hooks.producers`; for settings of your own,
``settings.environ`` and the readers of ``settings.py`` (``read_str``, ``read_int``,
``read_float``, ``read_bool``), in your ``__init__``.

The defaults let anyone connect, anonymously, unless ``AUTH_SECRET`` is set: then a connection
with a token (``tokens.py``) is who its token says, one without is an anonymous reader, and one
with an invalid token gets 401 before any 101. A channel is open to a connection whose token
grants it (``channels``, ``publish``), and to nobody else until the service says who may use it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any, TypeVar, overload

from aiohttp import hdrs, web
from multidict import CIMultiDictProxy, MultiDictProxy
from yarl import URL

from .publisher import Publisher
from .settings import Settings
from .tokens import MAX_TOKEN_LENGTH, NO_GRANTS, Claims, InvalidToken, read_token

logger = logging.getLogger(__name__)

#: The subprotocol a browser offers next to its token: ``new WebSocket(url, ["bearer", token])``.
BEARER_PROTOCOL = "bearer"
#: The cookie a connection token may come in instead.
TOKEN_COOKIE = "ws_token"  # noqa: S105 - a cookie name, not a secret
#: The app's :class:`~.publisher.Publisher`, which producers get and routes of the service's own
#: (:meth:`Hooks.setup`) broadcast with: ``await request.app[PUBLISHER_KEY].broadcast(data,
#: channel)``.
PUBLISHER_KEY = web.AppKey("publisher", Publisher)
#: Where the default ``authenticate`` leaves the claims of the connection's token.
TOKEN_CLAIMS = web.RequestKey("token_claims", Claims)

_T = TypeVar("_T")


class Refusal(Exception):
    """Raised by a hook to refuse a client's request; the client gets an error frame.

    Args:
        reason: What the error frame says, in a few words (``"not a member of this room"``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Handshake:
    """A connection's handshake, as the hooks read it for as long as the connection lives.

    What a ``web.Request`` tells of it: :attr:`path`, :attr:`query`, :attr:`headers`,
    :attr:`cookies`, :attr:`remote`, :attr:`app`, and what ``authenticate`` stored in the
    request by key (``handshake[TOKEN_CLAIMS]``, ``handshake.get(KEY)``). Not the request itself:
    a ``web.Request`` holds aiohttp's whole connection handler (about 5 KB), which an open
    WebSocket no longer needs.

    Args:
        request: The handshake's request.
    """

    __slots__ = ("_state", "app", "headers", "remote", "url")

    def __init__(self, request: web.Request) -> None:
        #: The app the connection was made to.
        self.app = request.app
        #: The handshake's headers.
        self.headers: CIMultiDictProxy[str] = request.headers
        #: The client's address as the socket saw it: the platform's proxy (``X-Forwarded-For``
        #: names the client behind it).
        self.remote = request.remote
        #: The handshake's path and query string, relative to the host.
        self.url: URL = request.rel_url
        self._state: dict[Any, Any] | None = dict(request) if len(request) else None

    @property
    def path(self) -> str:
        """The handshake's path, decoded (``/_ws/live``)."""
        return self.url.path

    @property
    def query(self) -> MultiDictProxy[str]:
        """The handshake's query string, parsed (``last_id``, say)."""
        return self.url.query

    @property
    def cookies(self) -> Mapping[str, str]:
        """The handshake's cookies by name: one pass over ``Cookie`` (RFC 6265), the first of
        each name kept, a quoted value unquoted."""
        cookies: dict[str, str] = {}
        for pair in self.headers.get(hdrs.COOKIE, "").split(";"):
            name, equals, value = pair.partition("=")
            if equals and (name := name.strip()):
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                cookies.setdefault(name, value)
        return MappingProxyType(cookies)

    @overload
    def __getitem__(self, key: web.RequestKey[_T]) -> _T: ...

    @overload
    def __getitem__(self, key: str) -> Any: ...

    def __getitem__(self, key: Any) -> Any:
        """What was stored in the handshake's request under ``key``.

        Raises:
            KeyError: Nothing was.
        """
        if self._state is None:
            raise KeyError(key)
        return self._state[key]

    @overload
    def get(self, key: web.RequestKey[_T], default: None = None) -> _T | None: ...

    @overload
    def get(self, key: str, default: Any = None) -> Any: ...

    def get(self, key: Any, default: Any = None) -> Any:
        """What was stored in the handshake's request under ``key``; ``default`` if nothing."""
        return default if self._state is None else self._state.get(key, default)


class Connection:
    """One client's WebSocket connection, as the hooks see it.

    Args:
        connection_id: The connection's id, also in every log line about it.
        identity: Who the client is, as ``authenticate`` said; None when anonymous.
        request: The handshake's request, kept as :attr:`request`, a :class:`Handshake`.
        send: Writes one message to this client alone.
        broadcast: Publishes on a channel, within the channel's budget of clients' publishes.

    Attributes:
        request: The handshake: its path, query, headers, cookies and what ``authenticate``
            stored in it (:class:`Handshake`).
        token: The claims of the connection's token, as the default ``authenticate`` read them;
            None without a token.
        channels: The channels its token grants to subscribe to; the service may narrow them
            (``connection.channels = Grants.parse([...])``) or ignore them.
        publish: The channels its token grants to publish on; likewise.
    """

    def __init__(
        self,
        connection_id: str,
        identity: str | None,
        request: web.Request,
        send: Callable[[object], bool],
        broadcast: Callable[[str, object], Awaitable[int]],
    ) -> None:
        self.id = connection_id
        self.identity = identity
        self.request = Handshake(request)
        self._send = send
        self._broadcast = broadcast
        self.token = request.get(TOKEN_CLAIMS)
        self.channels = NO_GRANTS if self.token is None else self.token.channels
        self.publish = NO_GRANTS if self.token is None else self.token.publish

    @property
    def member(self) -> str:
        """Who this connection is in a channel's presence: its identity, else one of its own."""
        return self.identity if self.identity is not None else f"anonymous-{self.id}"

    def send(self, data: object) -> bool:
        """Send ``{"type": "message", "data": data}`` to this client alone.

        ``data`` must be JSON-serialisable. The unsent-bytes limit applies as to any frame.

        Returns:
            False if the connection is closing or was just cut off for reading too slowly.
        """
        return self._send(data)

    async def broadcast(self, channel: str, data: object) -> int:
        """Publish ``data`` on ``channel``, as the server's own publishes: every subscriber of
        ``channel``, in every process, gets ``{"channel": channel, "id": N, "data": data}``.

        For :meth:`Hooks.on_message`, whose client asks and the service decides what goes out:
        ``data`` goes as given, not through :meth:`Hooks.prepare_publish` or
        :meth:`Hooks.authorize_publish` (the service is its author). Each call is charged to
        ``channel``'s and the process's budgets of clients' publishes
        (``CHANNEL_PUBLISHES_PER_SECOND``, ``PUBLISHES_PER_SECOND``), so a client that triggers
        it cannot flood a channel; it is bounded by the hook's ``HOOK_TIMEOUT``.

        Returns:
            The message's id in ``channel``.

        Raises:
            Refusal: A budget is spent, or the broker is unavailable: raised out of
                ``on_message``, the client gets an error frame saying which.
            ValueError: ``data`` holds a number JSON cannot carry (NaN or infinity).
        """
        return await self._broadcast(channel, data)


class Hooks:
    """The hooks, with their defaults.

    Args:
        settings: The app's settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def authenticate(self, request: web.Request) -> str | None:
        """Who is connecting: by default, the subject of the connection's token.

        Called before the handshake is answered. Return an identity (a user id, say), None for an
        anonymous connection, or raise ``web.HTTPUnauthorized`` or ``web.HTTPForbidden`` to refuse
        the connection before any 101.

        The default, with ``AUTH_SECRET`` set, reads the token of :func:`connection_token`: none
        makes an anonymous connection, an invalid one (forged, expired, another algorithm,
        malformed, oversized) is refused with 401, a valid one's claims go to ``request`` under
        :data:`TOKEN_CLAIMS` (then to ``Connection.token``), and its ``sub`` is the identity.
        Without ``AUTH_SECRET``, every connection is anonymous.
        """
        secrets = self.settings.auth_secrets
        token = connection_token(request) if secrets else None
        if token is None:
            return None
        try:
            claims = read_token(token, secrets, max_seconds=self.settings.max_token_seconds)
        except InvalidToken as invalid:
            logger.debug("refused a token: %s", invalid.reason)
            raise web.HTTPUnauthorized(
                text="the token is not valid: get a fresh one\n",
                headers={hdrs.CACHE_CONTROL: "no-store"},
            ) from None
        request[TOKEN_CLAIMS] = claims
        return claims.subject

    async def authorize_subscribe(self, connection: Connection, channel: str) -> bool:
        """Whether ``connection`` may receive the messages of ``channel``; by default, if its
        token grants it (``connection.channels``).

        Refused (False, or :class:`Refusal` with a reason of your own), the client gets an error
        frame. Every hook here has ``HOOK_TIMEOUT`` seconds to answer, from its first wait: one
        that answers without waiting is never timed (nor can it be interrupted).
        """
        return connection.channels.allows(channel)

    async def authorize_publish(self, connection: Connection, channel: str, data: object) -> bool:
        """Whether ``connection`` may publish ``data`` on ``channel``; by default, if its token
        grants it (``connection.publish``).

        ``data`` is parsed JSON already, within ``MAX_MESSAGE_BYTES`` and the nesting limit.
        """
        return connection.publish.allows(channel)

    async def prepare_publish(self, connection: Connection, channel: str, data: object) -> object:
        """What the subscribers of ``channel`` get when ``connection`` publishes ``data``: the
        value returned is what is sent, as ``{"channel": C, "id": N, "data": <returned>}``.

        By default ``data`` itself, once :meth:`authorize_publish` allows it. Override it to
        stamp what only the app knows, such as who sent it, never taking a client's word for it::

            async def prepare_publish(self, connection, channel, data):
                if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                    raise Refusal('a message is {"text": ...}')
                return {"text": data["text"], "sender": connection.member}

        Refuse with :class:`Refusal`. It is the hook asked about every publish of a client:
        :meth:`authorize_publish` is asked only by this default.
        """
        if await self.authorize_publish(connection, channel, data) is False:
            raise Refusal("forbidden")
        return data

    async def on_connect(self, connection: Connection) -> None:
        """Called once for each connection, raw or Socket.IO, after it joined the hub and before
        its first message is read; by default, nothing.

        May greet it (``connection.send(...)``), note it, or refuse it. Within ``HOOK_TIMEOUT``
        seconds: past them, or if it raises, the connection is closed with 1011 (clients come
        back after their backoff) and the error logged; raise :class:`Refusal` to close it with
        1008 and the refusal's reason (clients stop, as for a refusal of ``authenticate``). Only
        that connection waits for it; :meth:`on_disconnect` is called after it in every case.
        """

    async def on_disconnect(self, connection: Connection, code: int) -> None:
        """Called once for each connection :meth:`on_connect` was called for, after it left the
        hub: its channels and presence are gone, ``connection.send`` sends nothing; by default,
        nothing.

        ``code`` is the connection's close code (1006 when it ended without a close). Within
        ``HOOK_TIMEOUT`` seconds; what it raises, or a timeout, is logged and goes no further.
        """

    def setup(self, app: web.Application) -> None:
        """Add routes, middlewares or ``cleanup_ctx`` of the service's own to ``app``; by
        default, nothing.

        Called once by ``create_app``, after the template's routes and contexts: a webhook is
        ``app.router.add_post("/hooks/{name}", handler)``, and its handler broadcasts with
        ``await request.app[PUBLISHER_KEY].broadcast(data, channel)``; a ``cleanup_ctx``
        added here starts after the hub and stops before it. The platform's health check is
        answered before any middleware added here runs (``create_app`` keeps its middleware
        first). What the template serves (``/_ws/``, ``/_publish``, ``/cache-healthcheck``) is
        not to be added again.
        """

    def has_presence(self, channel: str) -> bool:
        """Whether ``channel``'s subscribers are told who is there; by default, no."""
        return False

    def counts_presence(self, channel: str) -> bool:
        """Whether ``channel``'s subscribers are told how many they are; by default, no.

        For large rooms (a live blog's readers): ``{"type": "presence", "channel": C,
        "count": N}`` on subscribing, then at most once a second when the count changes, counted
        in every process, without names. A channel has this or :meth:`has_presence`, not both.
        """
        return False

    async def on_message(self, connection: Connection, message: dict[str, Any]) -> None:
        """Handle a client's JSON object whose ``type`` is none of the protocol's own.

        Reply with ``connection.send(...)``, publish with ``await connection.broadcast(channel,
        data)``; raise :class:`Refusal` to answer with an error frame, as the default does for
        every such message.
        """
        raise Refusal("unknown message type")

    def producers(self, publisher: Publisher) -> list[Coroutine[Any, Any, None]]:
        """What runs for the app's lifetime and broadcasts through ``publisher``; by default,
        nothing.

        Each runs in a task of its own, is cancelled when the app stops, and ends alone if it
        fails (logged). Outside benchmark mode (``BENCH=1``) only.
        """
        return []


def connection_token(request: web.Request) -> str | None:
    """The token a client sent with its handshake: after ``bearer`` in ``Sec-WebSocket-Protocol``,
    else in ``Authorization: Bearer``, else in the ``ws_token`` cookie. Never from the query
    string, which ends up in access logs.

    Whatever comes is returned, however long or strange: :func:`~.tokens.read_token` judges it.
    """
    offered = [p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")]
    if BEARER_PROTOCOL in offered[:-1]:
        return offered[offered.index(BEARER_PROTOCOL) + 1] or None
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return cookie_value(request.headers.get(hdrs.COOKIE, ""), TOKEN_COOKIE)


def cookie_value(header: str, name: str) -> str | None:
    """The value of the cookie ``name`` in a ``Cookie`` header (RFC 6265), None if absent.

    One pass over the header, in linear time: not :class:`http.cookies.SimpleCookie`, whose
    parsing is quadratic on some inputs (CVE-2024-7592). A value longer than a token may be is
    not looked at: it is returned cut to one character more, which no token verifies.
    Not a general cookie parser: the other cookies are skipped unread, and a quoted value only
    loses its two quotes.
    """
    for pair in header.split(";"):
        key, equals, value = pair.partition("=")
        if equals and key.strip() == name:
            value = value.strip()[: MAX_TOKEN_LENGTH + 2]
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value[: MAX_TOKEN_LENGTH + 1] or None
    return None
