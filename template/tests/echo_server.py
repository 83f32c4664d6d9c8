"""An echo endpoint on the very layer ``/_ws/`` uses, for the Autobahn test cases.

The cases expect every text and binary message back unchanged; the app speaks JSON, so its
WebSocket layer is checked here: ``frames.ClientWebSocket`` (every frame charged and bounded,
unmasked frames refused) read through ``protocol.next_message`` (closes, pings, the close codes a
client may not send), on uvloop, with the app's default ``MAX_MESSAGE_BYTES``. Only the allowance
is raised: the cases send thousands of frames a second, as no client of the app may.

Usage: ``python echo_server.py PORT``; serves ``ws://127.0.0.1:PORT/_ws/echo``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys

import uvloop
from aiohttp import WSMsgType, web

PACKAGE = os.environ["ECHO_PACKAGE"]
inbound = importlib.import_module(f"{PACKAGE}.inbound")
guards = importlib.import_module(f"{PACKAGE}.guards")
protocol = importlib.import_module(f"{PACKAGE}.protocol")
settings = importlib.import_module(f"{PACKAGE}.settings").Settings()


async def echo(request: web.Request) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    allowance = guards.Allowance(1_000_000, 1 << 30, loop.time())
    ws: web.WebSocketResponse = inbound.ClientWebSocket(
        allowance, max_message_bytes=settings.max_message_bytes
    )
    await ws.prepare(request)
    while (message := await protocol.next_message(ws, lambda _ws: None)) is not None:
        if message.type is WSMsgType.TEXT:
            await ws.send_str(message.data)
        else:
            await ws.send_bytes(message.data)
    return ws


def main() -> None:
    app = web.Application()
    app.router.add_get("/_ws/echo", echo)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
