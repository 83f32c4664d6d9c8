"""Your service: the app's questions about each connection, answered your way.

Generated once, then yours: ``copier update`` never changes this file. Every hook you do not
write here keeps the default of :class:`~.hooks.Hooks` (which refuses every subscribe and
publish). The demo: the integers for everyone, and chat rooms on the channels ``chat/...``.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from .hooks import Connection, Hooks, Refusal, connection_token
from .hub import Hub
from .integers import IntegerTicker
from .tokens import verify_token

#: The channels of the demo's chat rooms.
CHAT_PREFIX = "chat/"
#: Longest name and text of a chat message, in characters.
MAX_NAME_LENGTH = 40
MAX_TEXT_LENGTH = 1000


class Service(Hooks):
    """The demo's answers."""

    async def authenticate(self, request: web.Request) -> str | None:
        """Who is connecting, from the request (never its query string, which ends up in logs).

        The demo lets anyone in, anonymously, unless ``AUTH_SECRET`` is set: then a connection
        needs a token signed with it (``tokens.issue_token``, or the README's PHP for a WordPress
        site), sent as ``new WebSocket(url, ["bearer", token])`` or in the ``ws_token`` cookie,
        and is refused with 401 before any 101 without one.
        """
        secret = self.settings.auth_secret
        if not secret:
            return None
        token = connection_token(request)
        subject = verify_token(secret, token) if token else None
        if subject is None:
            raise web.HTTPUnauthorized(text="a valid token is required\n")
        return subject

    async def authorize_subscribe(self, connection: Connection, channel: str) -> bool:
        """Anyone may join a chat room; no other channel is open to clients."""
        return channel.startswith(CHAT_PREFIX)

    async def prepare_publish(self, connection: Connection, channel: str, data: object) -> object:
        """Anyone may say ``{"name": ..., "text": ...}`` in a chat room, and nothing else.

        The room gets it with ``"sender"``: who the connection is (its identity, or its
        anonymous name), stamped here, never taken from the client; ``name`` is a nickname.
        """
        if not channel.startswith(CHAT_PREFIX):
            raise Refusal("forbidden")
        if not isinstance(data, dict) or set(data) != {"name", "text"}:
            raise Refusal('a chat message is {"name": ..., "text": ...}')
        name, text = data["name"], data["text"]
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise Refusal(f"the name must be 1-{MAX_NAME_LENGTH} characters")
        if not isinstance(text, str) or not 0 < len(text) <= MAX_TEXT_LENGTH:
            raise Refusal(f"the text must be 1-{MAX_TEXT_LENGTH} characters")
        return {"name": name, "text": text, "sender": connection.member}

    def has_presence(self, channel: str) -> bool:
        """Chat rooms show who is there."""
        return channel.startswith(CHAT_PREFIX)

    async def on_message(self, connection: Connection, message: dict[str, Any]) -> None:
        """``{"type": "whoami"}`` gets the name this connection has in presence lists."""
        if message["type"] != "whoami":
            raise Refusal("unknown message type")
        connection.send({"member": connection.member})

    def producers(self, hub: Hub) -> list[Coroutine[Any, Any, None]]:
        """The integers, one a second (``TICK_SECONDS``), while anyone is connected."""
        return [IntegerTicker(hub, self.settings.tick_seconds).run()]
