"""An echo endpoint on the very layer ``/_ws/`` uses, for the Autobahn test cases.

The cases expect every text and binary message back unchanged; the app speaks JSON, so its
WebSocket layer is checked here: aiohttp's checks of the handshake and the handover
(``handover.HttpFront``, ``handover.hand_over``), then ``inbound.RawClient`` (every frame charged
and bounded, unmasked frames refused, ``websockets``' codec for pings, closes and the close codes
a client may not send), on uvloop, with the app's default ``MAX_MESSAGE_BYTES``. The echo is a
``RawClient`` that answers each message itself instead of handing it to a session. Only the
allowance is raised: the cases send thousands of frames a second, as no client of the app may.

Usage: ``python echo_server.py PORT``; serves ``ws://127.0.0.1:PORT/_ws/echo``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from typing import Any

import uvloop
from aiohttp import web
from websockets.frames import Frame, Opcode

PACKAGE = os.environ["ECHO_PACKAGE"]
guards = importlib.import_module(f"{PACKAGE}.guards")
handover = importlib.import_module(f"{PACKAGE}.handover")
inbound = importlib.import_module(f"{PACKAGE}.inbound")
settings = importlib.import_module(f"{PACKAGE}.settings").Settings()


class EchoSession:
    """What ``RawClient.start`` needs of a session, for a client that answers itself."""

    async def open(self) -> bool:
        return True

    def close(self) -> None:
        pass

    async def ended(self, code: int) -> None:
        pass


class EchoClient(inbound.RawClient):  # type: ignore[misc, name-defined]
    """A raw client whose every message is written back unchanged, in order."""

    __slots__ = ()

    def text_received(self, text: str) -> None:
        self._echo(Frame(Opcode.TEXT, text.encode()))

    def binary_received(self, data: bytes) -> None:
        self._echo(Frame(Opcode.BINARY, data))

    def _echo(self, frame: Frame) -> None:
        # Messages are handed on before the codec's close, if a later frame brought one.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame.serialize(mask=False))


async def echo(request: web.Request) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    allowance = guards.Allowance(1_000_000, 1 << 30, loop.time())
    client: Any = EchoClient(
        allowance,
        max_message_bytes=settings.max_message_bytes,
        heard=lambda _client: None,
        about={"connection": "echo", "client": "kosoku"},
    )
    ready = handover.checked_handshake(request, ())
    received = handover.hand_over(request, ready, client)
    client.start(EchoSession(), received)
    handed_over: web.StreamResponse = handover.HandedOver()
    return handed_over


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/_ws/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    http = runner.server
    assert http is not None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: handover.HttpFront(http()), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
