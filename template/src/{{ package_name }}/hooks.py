"""What the app asks the service about each connection, and the answers it gets by default.

:class:`Hooks` holds every hook with its default answer. The project's own ``service.py`` (yours,
never changed by ``copier update``) subclasses it and overrides the hooks it needs; a hook added by
a later template version arrives here with a default, so an older ``service.py`` keeps working.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from aiohttp import hdrs, web

from .settings import Settings

#: The subprotocol a browser offers next to its token: ``new WebSocket(url, ["bearer", token])``.
BEARER_PROTOCOL = "bearer"
#: The cookie a connection token may come in instead.
TOKEN_COOKIE = "ws_token"  # noqa: S105 - a cookie name, not a secret


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
