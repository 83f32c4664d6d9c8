"""Your service: the app's questions about each connection, answered your way.

Generated once, then yours: ``copier update`` never changes this file. Every hook you do not
write here keeps the default of :class:`~.hooks.Hooks`.
"""

from __future__ import annotations

from aiohttp import web

from .hooks import Hooks, connection_token
from .tokens import verify_token


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
