"""The handover of ``/_ws/``'s connections from aiohttp to the app's own protocol (``handover.py``).

What it rests on, checked against the installed aiohttp and asyncio: ``web.Server`` as a
protocol factory whose handler lets go of a connection it is told is lost,
``WebSocketResponse``'s ``can_prepare`` for the handshake's checks, and a transport that changes
protocols. Should a release change any of them, these tests fail before any client notices.
Then the handover itself, against the app as a real process: bytes sent behind the handshake, a
handshake after another request on a keep-alive connection or pipelined behind it, nothing of
aiohttp's left with an open WebSocket, and pages and WebSockets on asyncio's own loop.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import importlib
import json
import os
import struct
from typing import Any

from aiohttp import web

from conftest import NO_DOTENV, PACKAGE, Server, start_server_in

handover = importlib.import_module(f"{PACKAGE}.handover")


def upgrade(path: str = "/_ws/") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def text_frame(text: str) -> bytes:
    """A final, masked text frame, as a client sends it (under 126 bytes)."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


async def read_messages(reader: asyncio.StreamReader, until: str) -> list[dict[str, Any]]:
    """The server's text messages, up to the first of type ``until``."""
    messages: list[dict[str, Any]] = []
    while not messages or messages[-1].get("type") != until:
        first, length = await asyncio.wait_for(reader.readexactly(2), 10)
        if length == 126:  # server frames are not masked, and these are under 64 KiB
            length = struct.unpack("!H", await reader.readexactly(2))[0]
        payload = await reader.readexactly(length)
        if first & 0x0F == 0x1:
            messages.append(json.loads(payload))
    return messages


class Recorder(asyncio.Protocol):
    """A protocol that takes a handed-over connection and keeps what it receives."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.received = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data


def test_aiohttp_and_asyncio_still_do_what_the_handover_rests_on() -> None:
    async def scenario() -> tuple[bytes, bytes, bool, int]:
        recorders: list[Recorder] = []

        async def endpoint(request: web.Request) -> web.StreamResponse:
            recorder = Recorder()
            recorders.append(recorder)
            ready = handover.checked_handshake(request, ("bearer",))
            behind = handover.hand_over(request, ready, recorder)
            recorder.data_received(behind)
            handed_over: web.StreamResponse = handover.HandedOver()
            return handed_over

        app = web.Application()
        app.router.add_get("/_ws/", endpoint)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        http = runner.server
        assert http is not None
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: handover.HttpFront(http()), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = upgrade().replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: bearer, t\r\n\r\n")
        writer.write(request + b"behind the head")
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(b", and later")
        await asyncio.sleep(0.2)
        gc.collect()
        requests = [item for item in gc.get_objects() if isinstance(item, web.BaseRequest)]
        recorder = recorders[0]
        assert recorder.transport is not None
        kept = recorder.transport.get_protocol() is recorder
        writer.close()
        server.close()
        await runner.cleanup()
        return head, bytes(recorder.received), kept, len(requests)

    head, received, kept, requests_alive = asyncio.run(scenario())
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Protocol: bearer\r\n" in head
    assert b"\r\nServer: app\r\n" in head
    assert received == b"behind the head, and later"
    assert kept  # the transport's protocol is the one it was handed to
    assert requests_alive == 0  # aiohttp let go of the request once its handler returned


def test_a_frame_sent_with_the_handshake_is_answered(server: Server) -> None:
    async def scenario() -> list[dict[str, Any]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        subscribe = json.dumps({"type": "subscribe", "channel": "chat/handover"})
        writer.write(upgrade() + text_frame(subscribe))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        try:
            return await read_messages(reader, "subscribed")
        finally:
            writer.close()

    answer = asyncio.run(scenario())[-1]
    assert (answer["type"], answer["channel"]) == ("subscribed", "chat/handover")


def test_a_handshake_after_another_request_on_its_connection_is_handed_over(
    server: Server,
) -> None:
    async def scenario() -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /cache-healthcheck? HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        health = await reader.readuntil(b"\r\n\r\n")
        length = int(health.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(upgrade())
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        return health, head

    health, head = asyncio.run(scenario())
    assert health.startswith(b"HTTP/1.1 200 ")
    assert head.startswith(b"HTTP/1.1 101 ")


def test_a_handshake_pipelined_behind_another_request_gets_400(server: Server) -> None:
    async def scenario() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /cache-healthcheck? HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + upgrade())
        answers = b""
        try:
            while answers.count(b"HTTP/1.1 ") < 2 and (chunk := await reader.read(65536)):
                answers += chunk
            return answers
        finally:
            writer.close()

    answers = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert answers.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 400 " in answers
    assert b"HTTP/1.1 101 " not in answers


def test_nothing_of_aiohttp_stays_with_an_open_websocket_and_it_costs_no_task() -> None:
    # The demo service has no on_connect or on_disconnect: from the first byte to the close, a
    # connection runs no task of the app's (the tasks are asyncio's and aiohttp's handshake's).
    app_module = importlib.import_module(f"{PACKAGE}.app")
    inbound = importlib.import_module(f"{PACKAGE}.inbound")
    metrics_module = importlib.import_module(f"{PACKAGE}.metrics")
    scaleout = importlib.import_module(f"{PACKAGE}.scaleout")
    settings = importlib.import_module(f"{PACKAGE}.settings").Settings()
    opened = 20

    async def scenario() -> tuple[int, int, int, int]:
        metrics = metrics_module.Metrics()
        broker = scaleout.create_broker(settings, {}, metrics)
        runner = web.AppRunner(app_module.create_app(settings, broker, metrics), access_log=None)
        await runner.setup()
        http = runner.server
        assert http is not None
        server = await asyncio.get_running_loop().create_server(
            lambda: handover.HttpFront(http()), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        package_dir = os.path.dirname(str(app_module.__file__))
        created = 0  # tasks that run the app's own code (asyncio's and aiohttp's aside)

        def counted(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            nonlocal created
            code = getattr(coro, "cr_code", None)
            created += code is not None and code.co_filename.startswith(package_dir)
            return asyncio.Task(coro, loop=loop, **kwargs)

        asyncio.get_running_loop().set_task_factory(counted)
        writers = []
        for _ in range(opened):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(upgrade())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
            writers.append(writer)
        await asyncio.sleep(0.2)
        gc.collect()
        alive = gc.get_objects()
        clients = sum(isinstance(item, inbound.RawClient) for item in alive)
        handlers_alive = sum(isinstance(item, web.RequestHandler) for item in alive)
        requests = sum(isinstance(item, web.BaseRequest) for item in alive)
        for writer in writers:
            writer.close()
        await asyncio.sleep(0.2)
        tasks = created
        server.close()
        await runner.cleanup()
        return clients, handlers_alive, requests, tasks

    clients, handlers_alive, requests_alive, tasks = asyncio.run(scenario())
    assert clients == opened
    assert handlers_alive == 0
    assert requests_alive == 0
    assert tasks == 0


def test_pages_and_websockets_are_served_on_asyncio_s_own_loop_too() -> None:
    # Where uvloop is not installed (Windows, say), asyncio's loop serves: its sendfile() would
    # refuse HttpFront, so aiohttp must write files itself (AIOHTTP_NOSENDFILE, __init__.py).
    without_uvloop = (
        "-c",
        f"import sys; sys.modules['uvloop'] = None\nfrom {PACKAGE}.__main__ import main\nmain()",
    )
    server = start_server_in(NO_DOTENV, None, {}, without_uvloop)
    try:
        page = server.get("/")
        script = server.get("/static/ws-client.js")

        async def handshake() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(upgrade())
            try:
                return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            finally:
                writer.close()

        head = asyncio.run(handshake())
    finally:
        server.stop()
    assert page[0] == 200
    assert b"<html" in page[2].lower()
    assert script[0] == 200
    assert len(script[2]) == int(script[1]["Content-Length"])
    assert head.startswith(b"HTTP/1.1 101 ")
