"""What the app asks the service about each connection, and the answers it gets by default.

:class:`Hooks` holds every hook with its default answer. The project's own ``service.py`` (yours,
never changed by ``copier update``) subclasses it and overrides the hooks it needs; a hook added by
a later template version arrives here with a default, so an older ``service.py`` keeps working.

The defaults let anyone connect, and refuse every subscribe and publish: a channel is open only
once the service says who may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from http.cookies import CookieError, SimpleCookie
from typing import Any

from aiohttp import hdrs, web

from .hub import Hub
from .settings import Settings

#: The subprotocol a browser offers next to its token: ``new WebSocket(url, ["bearer", token])``.
BEARER_PROTOCOL = "bearer"
#: The cookie a connection token may come in instead.
TOKEN_COOKIE = "ws_token"  # noqa: S105 - a cookie name, not a secret


class Refusal(Exception):
    """Raised by a hook to refuse a client's request; the client gets an error frame.

    Args:
        reason: What the error frame says, in a few words (``"not a member of this room"``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection:
    """One client's WebSocket connection, as the hooks see it.

    Args:
        connection_id: The connection's id, also in every log line about it.
        identity: Who the client is, as ``authenticate`` said; None when anonymous.
        request: The handshake's request (headers, cookies, path).
        send: Writes one message to this client alone.
    """

    def __init__(
        self,
        connection_id: str,
        identity: str | None,
        request: web.Request,
        send: Callable[[object], bool],
    ) -> None:
        self.id = connection_id
        self.identity = identity
        self.request = request
        self._send = send

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


class Hooks:
    """The hooks, with their defaults.

    Args:
        settings: The app's settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def authenticate(self, request: web.Request) -> str | None:
        """Who is connecting; by default, anyone, anonymously.

        Called before the handshake is answered. Return an identity (a user id, say), None for an
        anonymous connection, or raise ``web.HTTPUnauthorized`` or ``web.HTTPForbidden`` to refuse
        the connection before any 101.
        """
        return None

    async def authorize_subscribe(self, connection: Connection, channel: str) -> bool:
        """Whether ``connection`` may receive the messages of ``channel``; by default, no.

        Refused (False, or :class:`Refusal` with a reason of your own), the client gets an error
        frame. Every hook here has ``HOOK_TIMEOUT`` seconds to answer.
        """
        return False

    async def authorize_publish(self, connection: Connection, channel: str, data: object) -> bool:
        """Whether ``connection`` may publish ``data`` on ``channel``; by default, no.

        ``data`` is parsed JSON already, within ``MAX_MESSAGE_BYTES`` and the nesting limit.
        """
        return False

    async def prepare_publish(self, connection: Connection, channel: str, data: object) -> object:
        """What the subscribers of ``channel`` get when ``connection`` publishes ``data``.

        By default ``data`` itself, once :meth:`authorize_publish` allows it. Override it to
        stamp what only the app knows, such as who sent it (``connection.member``), never taking
        a client's word for it; refuse with :class:`Refusal`. It is the hook asked about every
        publish of a client: :meth:`authorize_publish` is asked only by this default.
        """
        if await self.authorize_publish(connection, channel, data) is False:
            raise Refusal("forbidden")
        return data

    def has_presence(self, channel: str) -> bool:
        """Whether ``channel``'s subscribers are told who is there; by default, no."""
        return False

    async def on_message(self, connection: Connection, message: dict[str, Any]) -> None:
        """Handle a client's JSON object whose ``type`` is none of the protocol's own.

        Reply with ``connection.send(...)``; raise :class:`Refusal` to answer with an error
        frame, as the default does for every such message.
        """
        raise Refusal("unknown message type")

    def producers(self, hub: Hub) -> list[Coroutine[Any, Any, None]]:
        """What runs for the app's lifetime and broadcasts through ``hub``; by default, nothing.

        Each is cancelled when the app stops. Outside benchmark mode (``BENCH=1``) only.
        """
        return []


def connection_token(request: web.Request) -> str | None:
    """The token a client sent with its handshake: after ``bearer`` in ``Sec-WebSocket-Protocol``,
    else in the ``ws_token`` cookie. Never from the query string, which ends up in access logs.
    """
    offered = [p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")]
    if BEARER_PROTOCOL in offered[:-1]:
        return offered[offered.index(BEARER_PROTOCOL) + 1] or None
    try:
        cookie = SimpleCookie(request.headers.get(hdrs.COOKIE, ""))
    except CookieError:
        return None
    morsel = cookie.get(TOKEN_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None
