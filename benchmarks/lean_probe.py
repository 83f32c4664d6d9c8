"""What an idle WebSocket costs each way of serving it: bare aiohttp against a lean protocol.

Issue 29's probe, before the lean endpoint is built. Each stack runs alone in a fresh server
process on uvloop (when installed); this process opens ``--connections`` WebSockets to it (a
plain HTTP/1.1 upgrade on raw sockets, then nothing), and the server's resident memory is read
from ``/proc`` before and after. The stacks:

- ``aiohttp``: one route, ``ws.prepare()`` and ``async for msg in ws`` (the floor of every
  aiohttp-served WebSocket: the app's own endpoint can only add to it);
- ``lean``: an ``asyncio.Protocol`` per connection driven by callbacks, no task and no future;
  the handshake and every client frame go through ``websockets``' sans-I/O ``ServerProtocol``
  (public API, made for this use), which stays as the connection's frame codec.

Run it with the interpreter of an environment that has aiohttp, websockets and uvloop::

    python benchmarks/lean_probe.py --connections 10000

It prints the resident memory per idle connection of each stack and the ratio between them, and
how long the connections took to open (a single run: the accept rate proper is the fan-out
benchmark's).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

from servers import free_port

STACKS = ("aiohttp", "lean")
#: Connections opened at once by the client: beyond the server's accept backlog they would wait.
OPENING_AT_ONCE = 500


def rss_kb(pid: int) -> int:
    """The resident memory of process ``pid`` in KB, as the kernel counts it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def raise_file_limit() -> None:
    """Allow as many open files as the hard limit does: one per connection at each end."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve_aiohttp(port: int) -> None:
    """Serve WebSockets on ``/_ws/`` with aiohttp alone, until cancelled."""
    from aiohttp import web

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/_ws/", endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    await asyncio.Event().wait()


class LeanConnection(asyncio.Protocol):
    """One WebSocket, handshake included, parsed by ``websockets``' sans-I/O protocol."""

    def __init__(self) -> None:
        from websockets.server import ServerProtocol

        self.codec = ServerProtocol(max_size=65_536)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        from websockets.http11 import Request

        self.codec.receive_data(data)
        for event in self.codec.events_received():
            if isinstance(event, Request):
                self.codec.send_response(self.codec.accept(event))
        self.flush()

    def eof_received(self) -> None:
        self.codec.receive_eof()
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        for chunk in self.codec.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                self.transport.close()


async def serve_lean(port: int) -> None:
    """Serve WebSockets with one :class:`LeanConnection` per connection, until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(LeanConnection, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def serve(stack: str, port: int) -> None:
    """Run the server of ``stack`` on ``port`` in this process (the child's entry point)."""
    raise_file_limit()
    with contextlib.suppress(ImportError):
        asyncio.set_event_loop_policy(importlib.import_module("uvloop").EventLoopPolicy())
    asyncio.run(serve_aiohttp(port) if stack == "aiohttp" else serve_lean(port))


def upgrade_request(port: int) -> bytes:
    """A browser's WebSocket handshake for ``/_ws/``, with a fresh key."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /_ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def open_connections(port: int, count: int) -> list[asyncio.StreamWriter]:
    """Open ``count`` WebSockets to ``port`` and return their writers, each past its 101."""
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def open_one() -> asyncio.StreamWriter:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(upgrade_request(port))
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"handshake refused: {head[:40]!r}")
            return writer

    return list(await asyncio.gather(*(open_one() for _ in range(count))))


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    """Return once something accepts connections on ``port``."""
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("the server did not start listening within 20 s")


def measure(stack: str, count: int) -> dict[str, Any]:
    """Start a server of ``stack``, open ``count`` idle WebSockets to it, and read its memory."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", stack, "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    try:
        wait_listening(port, server)
        time.sleep(0.5)
        before = rss_kb(server.pid)
        started = time.perf_counter()
        writers = asyncio.run(hold(port, count, server.pid))
        opened = time.perf_counter() - started
        return {
            "stack": stack,
            "connections": count,
            "rss_before_kb": before,
            "rss_after_kb": writers,
            "kb_per_connection": (writers - before) / count,
            "opened_per_second": count / opened,
        }
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()


async def hold(port: int, count: int, pid: int) -> int:
    """Open ``count`` WebSockets, let the server settle, and return its memory meanwhile."""
    writers = await open_connections(port, count)
    await asyncio.sleep(1.0)
    after = rss_kb(pid)
    for writer in writers:
        writer.close()
    return after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    raise_file_limit()
    results = {stack: measure(stack, args.connections) for stack in STACKS}
    print(f"{'stack':10} {'RSS before':>12} {'RSS after':>12} {'KB/conn':>9} {'opened/s':>10}")
    for result in results.values():
        print(
            f"{result['stack']:10} {result['rss_before_kb']:>9} KB {result['rss_after_kb']:>9} KB"
            f" {result['kb_per_connection']:>9.2f} {result['opened_per_second']:>10.0f}"
        )
    ratio = results["lean"]["kb_per_connection"] / results["aiohttp"]["kb_per_connection"]
    print(f"lean / aiohttp, memory per idle connection: {ratio:.2f}")


if __name__ == "__main__":
    main()
