"""Fan-out under stress: a client that never reads is cut off and delays nobody."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp

from conftest import Server

HANDSHAKE = (
    b"GET /_ws/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
BURST = 20_000
#: Paced at 5,000 broadcasts/s: far below what a reading client takes, so only the stalled one lags.
INTERVAL_MS = 0.2


def connect_stalled_client(port: int) -> socket.socket:
    """Complete a WebSocket handshake with a tiny receive window, then never read again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(HANDSHAKE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return sock


def drain(sock: socket.socket) -> int:
    """Read until the server ends the connection; return how many bytes came."""
    sock.settimeout(20)
    total = 0
    try:
        while chunk := sock.recv(65536):
            total += len(chunk)
    except ConnectionResetError:
        pass
    return total


def test_a_client_that_never_reads_does_not_delay_the_others(make_server: Any) -> None:
    server: Server = make_server(BENCH="1")
    stalled = connect_stalled_client(server.port)

    async def scenario() -> list[int]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(server.ws_base + "/_ws/fast") as ws,
        ):
            start = f"{server.base}/_bench/start?count={BURST}&interval_ms={INTERVAL_MS}"
            async with session.get(start) as response:
                assert response.status == 200
            ns: list[int] = []
            while len(ns) < BURST:
                message = json.loads(await ws.receive_str(timeout=10))
                if "id" in message:
                    ns.append(message["data"]["n"])
            return ns

    assert asyncio.run(scenario()) == list(range(1, BURST + 1))
    with stalled:
        received = drain(stalled)
    assert received < BURST * 50  # cut off well before the burst's 65 bytes a message ended
    deadline = time.monotonic() + 5
    while not any("stopped reading" in line for line in server.log):
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)
