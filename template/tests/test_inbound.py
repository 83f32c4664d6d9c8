"""A client's frames against the app as a real process: each frame charged, strict RFC 6455.

A raw TCP client writes the frames by hand: empty continuation floods, unfinished messages,
control frames between fragments, unmasked frames, a message of exactly ``MAX_MESSAGE_BYTES``.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from conftest import PACKAGE, Server, start_server_with_service

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    "GET /_ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
TEXT, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x0, 0x8, 0x9, 0xA
#: A service that logs each message it is handed and each connection's close code.
LOGGING = """
import logging
from typing import Any

from {package}.hooks import Connection, Hooks

logger = logging.getLogger("service_under_test")


class Service(Hooks):
    async def on_message(self, connection: Connection, message: dict[str, Any]) -> None:
        logger.warning("handed %s", message["type"])

    async def on_disconnect(self, connection: Connection, code: int) -> None:
        logger.warning("ended with %d", code)
""".replace("{package}", PACKAGE)


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = True) -> bytes:
    """One client frame (RFC 6455, section 5.2), masked unless told otherwise."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(UPGRADE.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The server's next frame: its opcode and payload."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return head[0] & 0x0F, await reader.readexactly(length)


async def close_of(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The code and reason of the server's close frame, skipping its data frames."""
    while True:
        opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
        if opcode == 0x8:
            code: int = struct.unpack("!H", payload[:2])[0]
            return code, payload[2:]


async def integers(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[int]:
    received: list[int] = []
    while len(received) < count:
        message = json.loads(await ws.receive_str(timeout=5))
        if "id" in message:
            received.append(message["data"])
    return received


def test_an_empty_fragment_flood_is_closed_with_4008_and_no_longer_read(server: Server) -> None:
    async def scenario() -> tuple[tuple[int, bytes], list[int], bool]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{server.ws_base}/_ws/calm") as calm,
        ):
            reader, writer = await connect(server)
            # A message that never ends: a text frame without FIN, then empty continuations.
            writer.write(frame(TEXT, b"x", fin=False) + frame(CONTINUATION, fin=False) * 100_000)
            close = await close_of(reader)
            # The server no longer reads this connection: 64 MB more cannot be drained.
            writer.write(frame(CONTINUATION, fin=False) * 10_000_000)
            try:
                await asyncio.wait_for(writer.drain(), 2)
                read_on = True
            except (TimeoutError, ConnectionError):
                read_on = False
            writer.transport.abort()
            return close, await integers(calm, 5), read_on

    close, received, read_on = asyncio.run(scenario())
    assert close == (4008, b"too many messages")
    assert received == list(range(received[0], received[0] + 5))
    assert not read_on


@pytest.mark.parametrize("kind", ["pings", "pongs"])
def test_control_frames_count_against_the_allowance(server: Server, kind: str) -> None:
    async def scenario() -> tuple[int, bytes]:
        reader, writer = await connect(server)
        writer.write(frame(0x9 if kind == "pings" else PONG) * 10_000)
        try:
            return await close_of(reader)
        finally:
            writer.transport.abort()

    assert asyncio.run(scenario()) == (4008, b"too many messages")


def test_a_message_unfinished_after_max_fragments_frames_is_closed(make_server: Any) -> None:
    # An allowance large enough that only the bound on fragments applies.
    server = make_server(CLIENT_MESSAGES_PER_SECOND="10000")

    async def scenario() -> tuple[int, bytes]:
        reader, writer = await connect(server)
        writer.write(frame(TEXT, b"{", fin=False) + frame(CONTINUATION, b" ", fin=False) * 100)
        try:
            return await close_of(reader)
        finally:
            writer.transport.abort()

    assert asyncio.run(scenario()) == (1008, b"message not finished in time")


@pytest.mark.parametrize("control", [PING, PONG], ids=["ping", "pong"])
def test_a_fragmented_message_within_the_bounds_is_answered(server: Server, control: int) -> None:
    async def scenario() -> tuple[list[tuple[int, bytes]], dict[str, Any]]:
        reader, writer = await connect(server)
        text = b'{"type": "subscribe", "channel": "nope"}'
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
        writer.write(
            frame(TEXT, pieces[0], fin=False)
            + b"".join(frame(CONTINUATION, p, fin=False) for p in pieces[1:-1])
            + frame(control, b"between")  # a control frame between fragments
            + frame(CONTINUATION, pieces[-1])
        )
        controls = []
        try:
            while True:
                opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
                if opcode != TEXT:
                    controls.append((opcode, payload))
                    continue
                message: dict[str, Any] = json.loads(payload)
                if message.get("type") == "error":
                    return controls, message
        finally:
            writer.transport.abort()

    controls, error = asyncio.run(scenario())
    assert controls == ([(PONG, b"between")] if control == PING else [])  # the pong comes first
    assert error["request"] == "subscribe"


@pytest.fixture(scope="module")
def logging_server() -> Iterator[Server]:
    running = start_server_with_service(LOGGING)
    yield running
    running.stop()


@pytest.mark.parametrize("reads", ["at once", "byte by byte"])
def test_a_close_between_fragments_is_echoed_and_the_message_dropped(
    logging_server: Server, reads: str
) -> None:
    code = 4000 if reads == "at once" else 1000

    async def scenario() -> tuple[list[tuple[int, bytes]], bytes]:
        reader, writer = await connect(logging_server)
        # The first fragment is a whole request: were the message handed on, it would be read.
        sent = (
            frame(TEXT, b'{"type": "unfinished"}', fin=False)
            + frame(CLOSE, struct.pack("!H", code) + b"bye")
            + frame(CONTINUATION, b" ")
        )
        if reads == "at once":
            writer.write(sent)
        else:  # the close's header is cut across reads too
            for byte in sent:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.005)
        frames: list[tuple[int, bytes]] = []
        try:
            while not frames or frames[-1][0] != CLOSE:
                frames.append(await asyncio.wait_for(read_frame(reader), 10))
            return frames, await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.transport.abort()

    frames, after = asyncio.run(scenario())
    assert frames == [(CLOSE, struct.pack("!H", code) + b"bye")]
    assert after == b""  # the server ended the connection
    deadline = time.monotonic() + 10
    while not any(f"ended with {code}" in line for line in logging_server.log):
        assert time.monotonic() < deadline, logging_server.log
        time.sleep(0.05)
    assert not any("handed unfinished" in line for line in logging_server.log)


@pytest.mark.parametrize("opcode", [TEXT, PONG])
def test_an_unmasked_frame_is_closed_with_1002(server: Server, opcode: int) -> None:
    async def scenario() -> tuple[int, bytes]:
        reader, writer = await connect(server)
        writer.write(frame(opcode, b"{}", masked=False))
        try:
            return await close_of(reader)
        finally:
            writer.transport.abort()

    assert asyncio.run(scenario()) == (1002, b"frames must be masked")


def test_a_message_of_exactly_max_message_bytes_is_accepted(make_server: Any) -> None:
    server = make_server(MAX_MESSAGE_BYTES="1024")

    async def scenario() -> tuple[dict[str, Any], int | None]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{server.ws_base}/_ws/") as ws,
        ):
            await ws.send_str("x" * 1024)  # the limit is inclusive: not JSON, but read
            while (message := json.loads(await ws.receive_str(timeout=5)))["type"] != "error":
                pass
            await ws.send_str("x" * 1025)
            while not (await ws.receive(timeout=5)).type.name.startswith("CLOS"):
                pass
            return message, ws.close_code

    error, code = asyncio.run(scenario())
    assert error["reason"].startswith("not JSON")
    assert code == 1009
