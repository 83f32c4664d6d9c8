"""Your service: the app's questions about each connection, answered your way.

Generated once, then yours: ``copier update`` never changes this file. Every hook you do not
write here keeps the default of :class:`~.hooks.Hooks` (which refuses every subscribe and
publish, and lets a connection in as its token says). The demo: the integers for everyone, chat
rooms on the channels ``chat/...``, live blogs on ``live/...`` (anyone may follow one, and sees
how many follow it; only a token's ``publish`` grant may post), the WordPress plugin's channels of
public posts for every reader (docs/protocol.md), and whatever else a connection's token grants
(``channels: ["private:post:42"]``).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from .hooks import Connection, Hooks, Refusal
from .integers import IntegerTicker
from .publisher import Publisher

#: The channels of the demo's chat rooms.
CHAT_PREFIX = "chat/"
#: The channels of the demo's live blogs, whose followers are counted.
LIVE_PREFIX = "live/"
#: Longest name and text of a chat message, in characters.
MAX_NAME_LENGTH = 40
MAX_TEXT_LENGTH = 1000
#: The WordPress plugin's channels of a public post, open to every reader: ``post:<ID>``,
#: ``comments:<ID>``, ``liveblog:<ID>``. A draft's, a private or a password-protected post's are
#: the same behind ``private:`` (``private:post:<ID>``): open only to a token that grants them.
WORDPRESS_PUBLIC_PREFIXES = ("post:", "comments:", "liveblog:")
PRIVATE_PREFIX = "private:"


class Service(Hooks):
    """The demo's answers."""

    # Who connects is the default's: with AUTH_SECRET set, the subject of a valid token (sent as
    # new WebSocket(url, ["bearer", token]) or in the ws_token cookie), anonymous without one,
    # 401 with an invalid one.

    async def authorize_subscribe(self, connection: Connection, channel: str) -> bool:
        """Anyone may join a chat room, follow a live blog or a public post; other channels, as
        the token says."""
        if channel.startswith((CHAT_PREFIX, LIVE_PREFIX, *WORDPRESS_PUBLIC_PREFIXES)):
            return True
        return await super().authorize_subscribe(connection, channel)

    async def prepare_publish(self, connection: Connection, channel: str, data: object) -> object:
        """Anyone with a token (anyone, without ``AUTH_SECRET``) may say ``{"name": ...,
        "text": ...}`` in a chat room, where it goes with ``"sender"``: who the connection is (its
        identity, or its anonymous name), stamped here, never taken from the client (``name`` is
        a nickname). Elsewhere, what the token's ``publish`` grants, as sent, but never on a
        post's channels: only the site publishes there (``/_publish``), and pages show what
        arrives there as HTML."""
        if channel.removeprefix(PRIVATE_PREFIX).startswith(WORDPRESS_PUBLIC_PREFIXES):
            raise Refusal("only the site publishes on a post's channels")
        if not channel.startswith(CHAT_PREFIX):
            return await super().prepare_publish(connection, channel, data)
        if self.settings.auth_secrets and connection.token is None:
            raise Refusal("anonymous readers may not post: connect with a token")
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

    def counts_presence(self, channel: str) -> bool:
        """Live blogs show how many follow them."""
        return channel.startswith(LIVE_PREFIX)

    async def on_message(self, connection: Connection, message: dict[str, Any]) -> None:
        """``{"type": "whoami"}`` gets the name this connection has in presence lists."""
        if message["type"] != "whoami":
            raise Refusal("unknown message type")
        connection.send({"member": connection.member})

    def producers(self, publisher: Publisher) -> list[Coroutine[Any, Any, None]]:
        """The integers, one a second (``TICK_SECONDS``), while anyone is connected."""
        return [IntegerTicker(publisher, self.settings.tick_seconds).run()]
