"""The floods of issue 26 against a generated app: the health check and default stream meanwhile.

Starts the app (``python -m PACKAGE`` with ``--python``, the interpreter of a venv where a rendered
project is installed) on a free port with ``TICK_SECONDS=0.1``, then runs each flood for
``--seconds`` while a prober sends ``GET /cache-healthcheck?`` on a new connection every 20 ms and
a polite client counts the integers of the default stream. Prints, per flood, the health check's
p50/p99/max (ms) and failures, and the longest stop of the default stream (s): figures, not
verdicts. Usage: ``floods.py --python VENV/bin/python --package my_app [--seconds 10]``

The floods (each attacker reconnects when it is closed):

- ``fragments``: 2 connections, a text frame without FIN then empty continuations, as fast as
  the socket takes them;
- ``pings``: 4 connections flooding pings;
- ``catch-up``: 300 clients asking for a 2 MB replay and never reading it;
- ``room``: 20 members of a 500-member room, each publishing within its own allowance (15/s);
- chosen with ``--flood``: ``socketio``, 100 Socket.IO clients that leave the namespace (``41``)
  and answer Engine.IO's pings (a ``socketio_server`` render); ``presence``, 200 clients
  subscribing to and leaving a room with presence twice a second (with ``REDIS_URL`` in the
  environment, presence goes through that Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

TOKEN = "floods-benchmark-token-0123456789"  # noqa: S105 - the benchmark's own
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
MASK = b"\x01\x02\x03\x04"


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A masked client frame (payloads under 126 bytes)."""
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + MASK + masked


async def connect(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return reader, writer


async def read_frames(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Yield the text payloads of the server's frames until it closes."""
    while True:
        head = await reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(length)
        if head[0] & 0x0F == 0x8:
            return
        yield payload


class Prober(threading.Thread):
    """The platform's health check, every 20 ms on a new connection."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.latencies, self.failures = port, list[float](), 0
        self.running = True

    def run(self) -> None:
        request = b"GET /cache-healthcheck? HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        while self.running:
            started = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    sock.sendall(request)
                    if not sock.recv(64).startswith(b"HTTP/1.1 200"):
                        self.failures += 1
                self.latencies.append((time.perf_counter() - started) * 1000)
            except OSError:
                self.failures += 1
            time.sleep(0.02)


async def watch_stream(port: int, stop: asyncio.Event) -> float:
    """The longest time between two integers of the default stream, in seconds."""
    reader, writer = await connect(port, "/_ws/watcher")
    last = time.monotonic()
    longest = 0.0
    frames = read_frames(reader)
    while not stop.is_set():
        try:
            payload = await asyncio.wait_for(anext(frames), 1)
        except TimeoutError:
            continue
        except (StopAsyncIteration, ConnectionError, asyncio.IncompleteReadError):
            print("the default stream's client was closed", file=sys.stderr)
            break
        if b'"id"' in payload and b'"channel"' not in payload:
            now = time.monotonic()
            longest, last = max(longest, now - last), now
    writer.close()
    return max(longest, time.monotonic() - last)


async def repeat(attack: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``attack`` again each time it ends (closed, refused), until ``stop``."""
    while not stop.is_set():
        try:
            await attack()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, StopAsyncIteration):
            await asyncio.sleep(0.05)


async def fragments(port: int, stop: asyncio.Event) -> list[Awaitable[None]]:
    empty = frame(0x0, fin=False) * 10_000

    async def attack() -> None:
        _reader, writer = await connect(port, "/_ws/fragments")
        writer.write(frame(0x1, b"x", fin=False))
        while not stop.is_set():
            writer.write(empty)
            await writer.drain()
        writer.close()

    return [repeat(attack, stop) for _ in range(2)]


async def pings(port: int, stop: asyncio.Event) -> list[Awaitable[None]]:
    burst = frame(0x9) * 10_000

    async def attack() -> None:
        _reader, writer = await connect(port, "/_ws/pings")
        while not stop.is_set():
            writer.write(burst)
            await writer.drain()
        writer.close()

    return [repeat(attack, stop) for _ in range(4)]


async def catch_up(port: int, stop: asyncio.Event) -> list[Awaitable[None]]:
    # A 2 MB backlog in the replay log.
    ids = [await asyncio.to_thread(publish, port, json.dumps([n, "x" * 2000])) for n in range(1000)]
    first = ids[0]

    async def attack() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        _reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(
            f"GET /_ws/slow?last_id={first - 1} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        while not stop.is_set():  # never reads; a pong now and then
            await asyncio.sleep(2)
            writer.write(frame(0xA))
        writer.close()

    return [repeat(attack, stop) for _ in range(300)]


async def room(port: int, stop: asyncio.Event) -> list[Awaitable[None]]:
    subscribe = frame(0x1, b'{"type":"subscribe","channel":"chat/big"}')

    async def member(speaking: bool) -> None:
        reader, writer = await connect(port, "/_ws/room")
        writer.write(subscribe)
        frames = read_frames(reader)

        async def read() -> None:
            async for _ in frames:
                pass

        reading = asyncio.create_task(read())
        say = frame(0x1, b'{"type":"publish","channel":"chat/big","data":{"name":"n","text":"t"}}')
        while not stop.is_set():
            if speaking:
                writer.write(say)
            await asyncio.sleep(1 / 15)
        reading.cancel()
        writer.close()

    return [repeat(functools.partial(member, n < 20), stop) for n in range(500)]


async def namespace_leavers(port: int, stop: asyncio.Event) -> list[Awaitable[None]]:
    async def attack() -> None:
        reader, writer = await connect(port, "/socket.io/?EIO=4&transport=websocket")
        frames = read_frames(reader)
        await anext(frames)  # Engine.IO's open packet
        writer.write(frame(0x1, b"40"))
        await anext(frames)  # connected to the namespace
        writer.write(frame(0x1, b"41"))  # left it, socket kept, pings answered
        async for payload in frames:
            if payload == b"2":
                writer.write(frame(0x1, b"3"))
        writer.close()
        await asyncio.sleep(1)  # closed: back a second later, as a client would

    return [repeat(attack, stop) for _ in range(100)]


async def presence(port: int, stop: asyncio.Event) -> list[Awaitable[None]]:
    subscribe = frame(0x1, b'{"type":"subscribe","channel":"chat/storm"}')
    unsubscribe = frame(0x1, b'{"type":"unsubscribe","channel":"chat/storm"}')

    async def member() -> None:
        reader, writer = await connect(port, "/_ws/storm")
        frames = read_frames(reader)
        while not stop.is_set():
            writer.write(subscribe)
            async for payload in frames:
                if b'"subscribed"' in payload or b'"error"' in payload:
                    break
            writer.write(unsubscribe)
            await asyncio.sleep(0.5)
        writer.close()

    return [repeat(member, stop) for _ in range(200)]


def publish(port: int, body: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        data = body.encode()
        sock.sendall(
            f"POST /_publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return int(json.loads(answer.split(b"\r\n\r\n", 1)[1])["id"])


FLOODS = {"fragments": fragments, "pings": pings, "catch-up": catch_up, "room": room}
#: Floods of an app with a choice: ``socketio`` (a socketio_server render), ``presence``
#: (subscribes and unsubscribes to a room with presence; with ``REDIS_URL`` set, on Redis).
CHOSEN_FLOODS = {"socketio": namespace_leavers, "presence": presence}


async def measure(port: int, name: str, seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    prober = Prober(port)
    watcher = asyncio.create_task(watch_stream(port, stop))
    attacks = [
        asyncio.ensure_future(a) for a in await {**FLOODS, **CHOSEN_FLOODS}[name](port, stop)
    ]
    prober.start()
    await asyncio.sleep(seconds)
    stop.set()
    prober.running = False
    longest_stop = await watcher
    await asyncio.wait(attacks, timeout=5)
    for attack in attacks:
        attack.cancel()
    prober.join()
    latencies = sorted(prober.latencies) or [0.0]
    return {
        "flood": name,
        "health_p50_ms": round(latencies[len(latencies) // 2], 1),
        "health_p99_ms": round(latencies[int(len(latencies) * 0.99)], 1),
        "health_max_ms": round(latencies[-1], 1),
        "health_failures": prober.failures,
        "probes": len(prober.latencies),
        "default_stream_longest_stop_s": round(longest_stop, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--flood", choices=[*FLOODS, *CHOSEN_FLOODS], action="append")
    args = parser.parse_args()
    results = []
    for name in args.flood or FLOODS:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "PORT": str(port), "TICK_SECONDS": "0.1", "PUBLISH_TOKEN": TOKEN}
        env |= {
            "MAX_PUBLISH_BYTES": "8192",
            "LOG_LEVEL": "ERROR",
            "MAX_CONNECTS_PER_SECOND": "5000",
        }
        app = subprocess.Popen([args.python, "-m", args.package], env=env)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("the app did not start")
                    time.sleep(0.1)
            result = asyncio.run(measure(port, name, args.seconds))
        finally:
            app.terminate()
            app.wait(15)
        results.append(result)
        print(json.dumps(result), flush=True)
    print("flood       health p50   p99    max  fails  default stream's longest stop")
    for r in results:
        print(
            f"{r['flood']:<10} {r['health_p50_ms']:>8} {r['health_p99_ms']:>6} "
            f"{r['health_max_ms']:>6} {r['health_failures']:>6}  "
            f"{r['default_stream_longest_stop_s']} s"
        )


if __name__ == "__main__":
    main()
