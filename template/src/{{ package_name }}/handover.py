"""aiohttp serves every connection until a WebSocket handshake on ``/_ws/`` hands it over.

Each accepted connection's protocol is an :class:`HttpFront`, which passes its bytes to aiohttp's
request handler (made by ``web.Server``, aiohttp's documented protocol factory) and stands as
that handler's transport. Health check, pages, ``/_publish``, ``/metrics`` and the checks of a
handshake (path, admission, Origin, authentication) stay aiohttp's. Once the endpoint has
accepted a handshake, :func:`hand_over` writes the 101 and gives the socket's transport to a
protocol of the app's (asyncio's ``Transport.set_protocol``), and aiohttp's handler is told its
connection is lost (``connection_lost``): nothing of aiohttp's stays with an open WebSocket.

What this rests on is public: asyncio's protocol switching, ``web.Server`` as a protocol
factory, a transport that only has to be an ``asyncio.Transport``, and
``WebSocketResponse.can_prepare`` for the handshake's checks (:func:`checked_handshake`).
``tests/test_handover.py`` checks each of them against the installed aiohttp (pinned ``<3.15``).

Handing over rather than putting a WebSocket protocol in front of aiohttp keeps one HTTP server
(its parser, limits, timeouts and error answers) for every request, the handshakes included.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterable
from typing import Any, cast

from aiohttp import hdrs, web

#: Most bytes of a GET request (its head and what follows it) kept until aiohttp answers: what
#: aiohttp reads of a request before it pauses. A longer handshake is refused with 400.
PENDING_LIMIT = 65_536
#: What the ``Server`` header says: no name or version of the software behind it.
SERVER = "app"
#: What a server appends to the client's key before hashing it (RFC 6455, section 1.3).
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HttpFront(asyncio.Protocol, asyncio.Transport):
    """aiohttp's server on one connection, until a WebSocket handshake hands it over.

    The protocol of every accepted connection, and the transport of the request handler that
    aiohttp makes for it: bytes, writes and flow control pass through both ways. A GET
    request's bytes received since aiohttp last wrote are kept, so that the handshake's head is
    known and what the client sent behind it is not lost.

    Args:
        http: aiohttp's request handler for this connection (``web.Server()``'s).
    """

    __slots__ = ("http", "pending", "transport")

    def __init__(self, http: asyncio.Protocol) -> None:
        self.http = http
        self.transport: asyncio.Transport | None = None
        #: A GET request's bytes received since aiohttp last wrote (None: another method, or
        #: more than ``PENDING_LIMIT``).
        self.pending: bytearray | None = bytearray()

    # The socket's side: asyncio.Protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.http.connection_made(self)

    def data_received(self, data: bytes) -> None:
        pending = self.pending
        if pending is not None:
            pending += data
            if len(pending) > PENDING_LIMIT or not pending.startswith(b"GET "[: len(pending)]):
                self.pending = None
        self.http.data_received(data)

    def eof_received(self) -> bool | None:
        return self.http.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.http.connection_lost(exc)

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()

    # aiohttp's side: asyncio.Transport, the socket's own until the connection is handed over.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.pending = bytearray()
        if self.transport is not None:
            self.transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.pending = bytearray()
        if self.transport is not None:
            self.transport.writelines(list_of_data)

    def write_eof(self) -> None:
        if self.transport is not None:
            self.transport.write_eof()

    def can_write_eof(self) -> bool:
        return self.transport is not None and self.transport.can_write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.http

    def is_reading(self) -> bool:
        return self.transport is not None and self.transport.is_reading()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0) if self.transport is None else self.transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high, low)

    def hand_over(self, request: web.BaseRequest, response: bytes, to: asyncio.Protocol) -> bytes:
        """Write ``response`` (the 101) and give the connection to the protocol ``to``.

        ``to`` receives ``connection_made`` with the socket's transport; aiohttp's request
        handler sees its connection lost, and whatever it writes afterwards goes nowhere.

        Returns:
            The bytes the client sent behind ``request``'s head, for ``to``.

        Raises:
            ConnectionResetError: The connection closed meanwhile.
            ValueError: The bytes of ``request`` are not known: it came pipelined behind
                another request, or its head and what followed it exceed ``PENDING_LIMIT``.
        """
        transport, pending = self.transport, self.pending
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection closed during the handshake")
        version = request.version
        line = f"GET {request.raw_path} HTTP/{version.major}.{version.minor}\r\n".encode()
        end = -1 if pending is None else pending.find(b"\r\n\r\n")
        if pending is None or end < 0 or not pending.startswith(line):
            raise ValueError("the handshake's bytes are not known: pipelined or too long")
        self.transport = self.pending = None
        transport.set_protocol(to)
        to.connection_made(transport)
        transport.write(response)
        self.http.connection_lost(None)
        return bytes(pending[end + 4 :])


class HandedOver(web.StreamResponse):
    """What a handler returns once :func:`hand_over` has given its connection away.

    aiohttp prepares and ends every response a handler returns; this one has nothing to write
    (the 101 went out with the handover), so neither does anything: no headers, no
    ``on_response_prepare`` signal, no end of body.
    """

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def checked_handshake(request: web.Request, protocols: tuple[str, ...]) -> web.WebSocketReady:
    """aiohttp's test of a WebSocket handshake (the checks of ``prepare()`` without its writing:
    ``Connection: upgrade``, ``Sec-WebSocket-Key``, ``-Version``), and the subprotocol it picks
    among ``protocols``.

    Raises:
        HTTPBadRequest: Not a well-formed WebSocket handshake, or one with a body.
    """
    ready = web.WebSocketResponse(protocols=protocols).can_prepare(request)
    if request.body_exists or not ready.ok:
        raise web.HTTPBadRequest(text="not a valid WebSocket handshake\n")
    return ready


def hand_over(request: web.Request, ready: web.WebSocketReady, to: asyncio.Protocol) -> bytes:
    """Answer ``request``, a handshake that :func:`checked_handshake` passed as ``ready``, with a
    101 and give its connection to ``to``.

    The 101 is RFC 6455's (section 4.2.2), with ``ready``'s subprotocol. The handler then
    returns a :class:`HandedOver`: the connection is ``to``'s.

    Returns:
        The bytes the client sent behind the handshake, for ``to``.

    Raises:
        HTTPBadRequest: The handshake came pipelined behind another request on its connection.
        ConnectionResetError: The client went away during the handshake.
    """
    front = request.transport
    if not isinstance(front, HttpFront):
        raise TypeError("the connection is not served through HttpFront")
    key = request.headers[hdrs.SEC_WEBSOCKET_KEY].encode()
    accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID, usedforsecurity=False).digest())
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\nServer: " + SERVER.encode() + b"\r\n"
    )
    if ready.protocol is not None:
        response += b"Sec-WebSocket-Protocol: " + ready.protocol.encode() + b"\r\n"
    try:
        return front.hand_over(request, response + b"\r\n", to)
    except ValueError:
        raise web.HTTPBadRequest(text="Send the WebSocket handshake on its own.\n") from None
