"""Recovery under attack and under a deploy's reconnect wave: replay never holds anyone else up."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import struct
import time
from typing import Any

import aiohttp

from conftest import Server
from test_fanout import drain
from test_publish import TOKEN

#: Close code a client too slow for its own backlog gets.
TRY_AGAIN_LATER = 1013


def publish_many(server: Server, count: int, size: int) -> list[int]:
    """Publish ``count`` messages of about ``size`` bytes over one connection; return their ids."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    ids = []
    try:
        for n in range(count):
            conn.request("POST", "/_publish", body=json.dumps([n, "x" * size]), headers=headers)
            response = conn.getresponse()
            assert response.status == 200, response.read()
            ids.append(json.loads(response.read())["id"])
    finally:
        conn.close()
    return ids


def connect_idle(port: int, path: str) -> socket.socket:
    """Complete a WebSocket handshake on ``path`` with a tiny receive window, then never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def wait_for_log(server: Server, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in server.log):
        assert time.monotonic() < deadline, f"no {text!r} in {server.log}"
        time.sleep(0.05)


def test_a_replaying_client_that_never_reads_holds_up_nobody(make_server: Any) -> None:
    server: Server = make_server(PUBLISH_TOKEN=TOKEN, MAX_PUBLISH_BYTES="4096")
    ids = publish_many(server, 1000, 2000)  # a 2 MB backlog
    stalled = connect_idle(server.port, f"/_ws/slow?last_id={ids[0] - 1}")

    async def scenario() -> tuple[list[int], int]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(server.ws_base + "/_ws/fast") as ws,
        ):
            integers: list[int] = []
            while len(integers) < 20:  # two seconds of ticks, each well within its deadline
                message = json.loads(await ws.receive_str(timeout=3))
                if isinstance(message.get("data"), int):
                    integers.append(message["data"])
            published = await asyncio.to_thread(publish_many, server, 1, 10)
            while True:
                message = json.loads(await ws.receive_str(timeout=3))
                if message.get("id") == published[0]:
                    return integers, message["data"][0]

    integers, published_n = asyncio.run(scenario())
    assert integers == list(range(integers[0], integers[0] + 20))
    assert published_n == 0
    # Once the replay log has moved past what it still has to read, it is cut off.
    publish_many(server, 1000, 2000)
    wait_for_log(server, "fell behind its own backlog")
    with stalled:
        drain(stalled)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 5  # nothing left to wait for: no stuck replay


def test_a_reconnect_wave_gets_every_replay_whole_and_in_order(make_server: Any) -> None:
    server: Server = make_server(BENCH="1", PUBLISH_TOKEN=TOKEN, MAX_PUBLISH_BYTES="4096")
    missed = publish_many(server, 300, 500)
    clients = 300
    live = 50

    async def client(
        session: aiohttp.ClientSession, index: int, until: asyncio.Future[int]
    ) -> list[int]:
        url = f"{server.ws_base}/_ws/wave/{index}?last_id={missed[0] - 1}"
        # Each from an address of its own, as a deploy's wave is: one address gets a tenth.
        address = {"X-Forwarded-For": f"10.1.{index // 250}.{index % 250}"}
        async with session.ws_connect(url, headers=address) as ws:
            ids: list[int] = []
            while not (until.done() and ids and ids[-1] >= until.result()):
                message = json.loads(await ws.receive_str(timeout=30))
                assert message.get("type") != "gap", message
                if "id" in message:
                    ids.append(message["id"])
            return ids

    async def scenario() -> list[list[int]]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            until: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            wave = [asyncio.create_task(client(session, i, until)) for i in range(clients)]
            # Live broadcasts go on while the wave replays.
            published = await asyncio.to_thread(publish_many, server, live, 100)
            until.set_result(published[-1])
            return await asyncio.gather(*wave)

    received = asyncio.run(scenario())
    expected_last = missed[0] + len(missed) + live - 1
    for ids in received:
        assert ids == list(range(missed[0], expected_last + 1))


def close_frame(code: int) -> bytes:
    """A masked client close frame with ``code``."""
    mask = os.urandom(4)
    payload = struct.pack("!H", code)
    return (
        bytes([0x88, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


async def frames_until_eof(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[list[int], bool]:
    """The opcodes of every frame the server sends until it ends the connection.

    Answers the server's close frame as a client must. Also returns whether the connection ended
    with a reset: how the server drops a client that has not finished closing in time (frames are
    read in large chunks here, so that this happens only on a starved host).
    """
    opcodes: list[int] = []
    buffer = b""
    while True:
        try:
            chunk = await reader.read(1 << 16)
        except ConnectionError:  # reset, or a broken pipe for a close frame sent too late
            return opcodes, True
        if not chunk:
            return opcodes, False
        buffer += chunk
        offset = 0
        while len(buffer) - offset >= 2:
            length = buffer[offset + 1] & 0x7F
            extended = {126: "!H", 127: "!Q"}.get(length)
            start = offset + 2 + (struct.calcsize(extended) if extended else 0)
            if len(buffer) < start:
                break
            if extended:
                (length,) = struct.unpack_from(extended, buffer, offset + 2)
            if len(buffer) < start + length:
                break
            opcode = buffer[offset] & 0x0F
            if opcode == 0x8 and 0x8 not in opcodes:
                writer.write(close_frame(1000))
            opcodes.append(opcode)
            offset = start + length
        buffer = buffer[offset:]


def test_no_data_frame_ever_follows_a_close_frame(make_server: Any) -> None:
    # Broadcasts go on while clients close: some on their own, the others drained by SIGTERM.
    server: Server = make_server(BENCH="1", DRAIN_SECONDS="1")
    key = "dGhlIHNhbXBsZSBub25jZQ=="

    async def client(index: int) -> tuple[list[int], bool]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        last_id = "?last_id=1" if index % 2 else ""  # half of them catching up from a gap
        writer.write(
            f"GET /_ws/{index}{last_id} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        if index % 3 == 0:  # closes spread over the burst
            asyncio.get_running_loop().call_later(
                0.2 + index * 0.01, writer.write, close_frame(1000)
            )
        opcodes, reset = await frames_until_eof(reader, writer)
        writer.close()
        return opcodes, reset

    async def scenario() -> list[tuple[list[int], bool]]:
        tasks = [asyncio.create_task(client(i)) for i in range(60)]
        await asyncio.sleep(0.1)
        await asyncio.to_thread(server.get, "/_bench/start?count=1000000&interval_ms=0")
        await asyncio.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        return await asyncio.gather(*tasks)

    endings = asyncio.run(scenario())
    assert server.process.wait(10) == 0
    closed = sum(0x8 in opcodes for opcodes, _reset in endings)
    assert closed > len(endings) // 2, f"only {closed} of {len(endings)} clients got a close frame"
    for opcodes, reset in endings:
        assert reset or 0x8 in opcodes, "the server ended the connection without a close frame"
        if 0x8 in opcodes:
            assert opcodes.index(0x8) == len(opcodes) - 1, "a frame followed the close frame"


def test_a_replaying_client_that_reads_nothing_is_cut_off_and_its_backlog_freed(
    make_server: Any,
) -> None:
    server: Server = make_server(PUBLISH_TOKEN=TOKEN, MAX_PUBLISH_BYTES="4096")
    ids = publish_many(server, 300, 2000)  # more than MAX_CLIENT_BUFFER_BYTES, all in the log
    stalled = connect_idle(server.port, f"/_ws/slow?last_id={ids[0] - 1}")
    with stalled:
        wait_for_log(server, "read none of its catch-up for 10 s", timeout=30)
        drain(stalled)  # closed: a close frame after what it was sent, then the end
    assert server.get("/cache-healthcheck?")[0] == 200
