"""What an idle WebSocket costs each way of serving it: aiohttp, a lean protocol, and the handover.

Issue 29's probe. Each stack runs alone in a fresh server process on uvloop (when installed);
this process opens ``--connections`` WebSockets to it (a plain HTTP/1.1 upgrade on raw sockets,
then nothing), and the server's resident memory is read from ``/proc`` before and after. The
stacks:

- ``aiohttp``: one route, ``ws.prepare()`` and ``async for msg in ws`` (the floor of every
  aiohttp-served WebSocket: the app's own endpoint can only add to it);
- ``lean``: an ``asyncio.Protocol`` per connection driven by callbacks, no task and no future;
  the handshake and every client frame go through ``websockets``' sans-I/O ``ServerProtocol``
  (public API, made for this use), which stays as the connection's frame codec;
- ``handover``: aiohttp serves the connection (a middleware, a handler that checks the Origin,
  ``WebSocketResponse.can_prepare()``) behind the generated app's ``HttpFront``
  (``handover.py``), until the handler hands it over: the 101 is written, the socket's transport
  gets a lean protocol whose ``websockets`` codec starts open (``Transport.set_protocol``), and
  aiohttp's request handler sees its connection lost.

Run it with the interpreter of an environment that has aiohttp, websockets and uvloop::

    python benchmarks/lean_probe.py --connections 10000

It prints the resident memory per idle connection of each stack and the ratios between them, how
fast the connections opened (a single run: the accept rate proper is the fan-out benchmark's), and
the server's CPU time per connection opened (from ``/proc``: steadier than the rate on a busy
machine). With ``--check`` it checks the handover instead, in one process on real sockets: a
frame pipelined behind the handshake and one sent later are echoed, the server's ping and both
closing handshakes work, and nothing of aiohttp's (request handler, request, response, task)
stays with a handed-over connection; then the Python memory of 1,000 of them, by library.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import gc
import importlib
import importlib.util
import os
import resource
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from servers import free_port

if TYPE_CHECKING:
    from aiohttp import web
    from websockets.protocol import Protocol

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STACKS = ("aiohttp", "lean", "handover")
#: Connections opened at once by the client: beyond the server's accept backlog they would wait.
OPENING_AT_ONCE = 500
#: The largest message a client may send, in bytes.
MAX_SIZE = 65_536
#: The generated app's handover, served by the ``handover`` stack.
HANDOVER_PY = Path(__file__).resolve().parent.parent / "template/src/{{ package_name }}/handover.py"
#: The Origin that the ``handover`` stack's handler accepts.
ORIGIN = "https://example.com"


def rss_kb(pid: int) -> int:
    """The resident memory of process ``pid`` in KB, as the kernel counts it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used so far (user and system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    """One WebSocket driven by callbacks, its frames parsed by ``websockets``' sans-I/O ``codec``.

    A ``ServerProtocol`` in its opening state does the handshake too (the ``lean`` stack); a
    ``Protocol`` created open takes a connection that aiohttp's handshake handed over. Text
    messages are echoed; pings and the closing handshake are the codec's.
    """

    def __init__(self, codec: Protocol) -> None:
        self.codec = codec
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Request
        from websockets.server import ServerProtocol

        codec = self.codec
        codec.receive_data(data)
        for event in codec.events_received():
            if isinstance(event, Request):
                assert isinstance(codec, ServerProtocol)
                codec.send_response(codec.accept(event))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT and event.fin:
                codec.send_text(event.data)
        self.flush()

    def eof_received(self) -> None:
        self.codec.receive_eof()
        self.flush()

    def flush(self) -> None:
        """Write what the codec has to send; close the transport when it says so."""
        assert self.transport is not None
        for chunk in self.codec.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                self.transport.close()


def lean_connection() -> LeanConnection:
    """A connection of the ``lean`` stack: the handshake is the codec's own."""
    from websockets.server import ServerProtocol

    return LeanConnection(ServerProtocol(max_size=MAX_SIZE))


def open_connection() -> LeanConnection:
    """A connection that aiohttp's handshake handed over: its codec starts open."""
    from websockets.protocol import Protocol, Side

    return LeanConnection(Protocol(Side.SERVER, max_size=MAX_SIZE))


async def serve_lean(port: int) -> None:
    """Serve WebSockets with one :class:`LeanConnection` per connection, until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lean_connection, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


@functools.cache
def app_handover() -> ModuleType:
    """The generated app's own ``handover.py`` (plain Python, importing aiohttp only), which the
    ``handover`` stack serves with: ``HttpFront`` and ``hand_over`` (loaded once: its
    ``hand_over`` checks for its own ``HttpFront``)."""
    spec = importlib.util.spec_from_file_location("app_handover", HANDOVER_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def handover_app() -> web.Application:
    """An aiohttp app that checks a handshake and hands its connection to :func:`open_connection`.

    A middleware counts the handshakes (admission would go there); the handler checks the
    Origin, as the generated app's endpoint does, before the handover; ``/health`` is plain HTTP.
    """
    from aiohttp import web

    handshakes = 0

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal handshakes
        handshakes += 1
        return await handler(request)

    handover = app_handover()

    async def endpoint(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Origin", ORIGIN) != ORIGIN:
            raise web.HTTPForbidden(text="Origin not allowed.\n")
        connection = open_connection()
        ready = handover.checked_handshake(request, ())
        behind = handover.hand_over(request, ready, connection)
        if behind:
            connection.data_received(behind)
        handed_over: web.StreamResponse = handover.HandedOver()
        return handed_over

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(middlewares=[count])
    app.router.add_get("/_ws/", endpoint)
    app.router.add_get("/health", health)
    return app


async def start_handover(port: int) -> tuple[web.AppRunner, asyncio.Server]:
    """Start :func:`handover_app` on ``port``, each connection behind the app's ``HttpFront``."""
    from aiohttp import web

    runner = web.AppRunner(handover_app(), access_log=None)
    await runner.setup()
    http = runner.server
    assert http is not None
    loop = asyncio.get_running_loop()
    front = app_handover().HttpFront
    server = await loop.create_server(lambda: front(http()), "127.0.0.1", port, backlog=4096)
    return runner, server


async def serve_handover(port: int) -> None:
    """Serve :func:`handover_app` until cancelled."""
    _runner, server = await start_handover(port)
    async with server:
        await server.serve_forever()


def serve(stack: str, port: int) -> None:
    """Run the server of ``stack`` on ``port`` in this process (the child's entry point)."""
    raise_file_limit()
    with contextlib.suppress(ImportError):
        asyncio.set_event_loop_policy(importlib.import_module("uvloop").EventLoopPolicy())
    # As the generated app's ``__main__`` does: what start-up made lives as long as the process,
    # and the youngest generation is collected every 10,000 allocations instead of 700.
    gc.freeze()
    gc.set_threshold(10_000)
    servers = {"aiohttp": serve_aiohttp, "lean": serve_lean, "handover": serve_handover}
    asyncio.run(servers[stack](port))


def upgrade_request(port: int) -> bytes:
    """A browser's WebSocket handshake for ``/_ws/``, with a fresh key."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /_ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {ORIGIN}\r\n\r\n"
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


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked frame as a client sends it (a payload under 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The opcode and payload of the server's next frame (unmasked, under 126 bytes)."""
    first, length = await reader.readexactly(2)
    return first & 0x0F, await reader.readexactly(length)


async def handshake(port: int, behind: bytes = b"") -> tuple[asyncio.StreamReader, Any]:
    """Open a WebSocket to ``port``, ``behind`` sent in the same write as the request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(port) + behind)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


def alive(*types: type) -> list[object]:
    """The objects of ``types`` that the garbage collector still tracks, after a collection."""
    gc.collect()
    return [thing for thing in gc.get_objects() if isinstance(thing, types)]


async def check_handover(count: int) -> None:
    """Check the ``handover`` stack on real sockets in this process, then its Python memory.

    Prints each check as it passes; an ``AssertionError`` says which one failed.
    """
    from aiohttp import web

    port = free_port()
    runner, server = await start_handover(port)
    aiohttp_objects = (web.RequestHandler, web.BaseRequest, web.StreamResponse)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        assert await reader.readexactly(3) == b"ok\n"
        writer.write(upgrade_request(port) + client_frame(0x1, b"early"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert await read_frame(reader) == (0x1, b"early")
        print("ok: a handshake on a kept-alive connection, a frame pipelined behind it echoed")
        writer.write(client_frame(0x1, b"late"))
        assert await read_frame(reader) == (0x1, b"late")
        print("ok: a frame sent after the 101 echoed")
        await asyncio.sleep(0.1)
        assert not alive(*aiohttp_objects), alive(*aiohttp_objects)
        assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()
        assert runner.server is not None
        assert not runner.server.connections
        print("ok: no request handler, request, response or task of aiohttp's left")
        (connection,) = alive(LeanConnection)
        assert isinstance(connection, LeanConnection)
        connection.codec.send_ping(b"beat")
        connection.flush()
        assert await read_frame(reader) == (0x9, b"beat")
        writer.write(client_frame(0xA, b"beat"))
        print("ok: a ping from the server answered")
        connection.codec.send_close(1001, "bye")
        connection.flush()
        assert await read_frame(reader) == (0x8, (1001).to_bytes(2, "big") + b"bye")
        writer.write(client_frame(0x8, (1001).to_bytes(2, "big")))
        assert await reader.read() == b""
        print("ok: a closing handshake started by the server, then the server closed TCP")
        writer.close()

        reader, writer = await handshake(port)
        writer.write(client_frame(0x8, (1000).to_bytes(2, "big")))
        assert await read_frame(reader) == (0x8, (1000).to_bytes(2, "big"))
        assert await reader.read() == b""
        print("ok: a closing handshake started by the client")
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request(port).replace(ORIGIN.encode(), b"https://evil.example"))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 403 ")
        assert await reader.readuntil(b"\n") == b"Origin not allowed.\n"
        writer.write(upgrade_request(port).replace(b"Sec-WebSocket-Version: 13", b"X: y"))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        print("ok: aiohttp answers a refused Origin (403), then a bad handshake (400)")
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + upgrade_request(port))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        assert await reader.readexactly(3) == b"ok\n"
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        print("ok: a handshake pipelined behind another request refused (400)")
        writer.close()

        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        writers = await open_connections(port, count)
        await asyncio.sleep(0.5)
        assert not alive(*aiohttp_objects)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        print(f"ok: {count} handed-over connections open, nothing of aiohttp's alive")
        by_file: dict[str, int] = {}
        for stat in after.compare_to(before, "filename"):
            name = stat.traceback[0].filename
            library = next((lib for lib in ("aiohttp", "websockets") if f"/{lib}/" in name), None)
            key = library or Path(name).name
            by_file[key] = by_file.get(key, 0) + stat.size_diff
        for name in ("aiohttp", "websockets", "lean_probe.py", "streams.py"):
            note = " (the client's)" if name == "streams.py" else ""
            size = by_file.get(name, 0) / count
            print(f"  Python memory per connection in {name}: {size:.0f} B{note}")
        for client in writers:
            client.close()
    finally:
        server.close()
        await runner.cleanup()


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
        before, cpu_before = rss_kb(server.pid), cpu_seconds(server.pid)
        started = time.perf_counter()
        after, cpu_after = asyncio.run(hold(port, count, server.pid))
        opened = time.perf_counter() - started
        return {
            "stack": stack,
            "connections": count,
            "rss_before_kb": before,
            "rss_after_kb": after,
            "kb_per_connection": (after - before) / count,
            "opened_per_second": count / opened,
            "cpu_us_per_connection": (cpu_after - cpu_before) / count * 1e6,
        }
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()


async def hold(port: int, count: int, pid: int) -> tuple[int, float]:
    """Open ``count`` WebSockets, let the server settle, and return its memory meanwhile and the
    CPU time it has used."""
    writers = await open_connections(port, count)
    cpu = cpu_seconds(pid)
    await asyncio.sleep(1.0)
    after = rss_kb(pid)
    for writer in writers:
        writer.close()
    return after, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "0")), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--check", action="store_true", help="check the handover stack in this process instead"
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    raise_file_limit()
    if args.check:
        with contextlib.suppress(ImportError):
            asyncio.set_event_loop_policy(importlib.import_module("uvloop").EventLoopPolicy())
        asyncio.run(check_handover(min(args.connections, 1000)))
        return
    results = {stack: measure(stack, args.connections) for stack in STACKS}
    print(
        f"{'stack':10} {'RSS before':>12} {'RSS after':>12} {'KB/conn':>9} {'opened/s':>10}"
        f" {'server CPU µs/conn':>19}"
    )
    for result in results.values():
        print(
            f"{result['stack']:10} {result['rss_before_kb']:>9} KB {result['rss_after_kb']:>9} KB"
            f" {result['kb_per_connection']:>9.2f} {result['opened_per_second']:>10.0f}"
            f" {result['cpu_us_per_connection']:>19.0f}"
        )
    for stack in ("lean", "handover"):
        ratio = results[stack]["kb_per_connection"] / results["aiohttp"]["kb_per_connection"]
        print(f"{stack} / aiohttp, memory per idle connection: {ratio:.2f}")


if __name__ == "__main__":
    main()
