"""SIGTERM, as deploys and `docker stop` send it: clients are told, spread out, and it exits."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp

from conftest import Server

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def test_sigterm_closes_clients_with_1012_and_exits_within_10_s(make_server: Any) -> None:
    server: Server = make_server()

    async def scenario() -> tuple[list[int | None], int, float]:
        async with aiohttp.ClientSession() as session:
            clients = [await session.ws_connect(f"{server.ws_base}/_ws/{i}") for i in range(3)]
            for ws in clients:
                await ws.receive_str(timeout=10)
            started = time.monotonic()
            server.process.terminate()
            for ws in clients:
                while not (await ws.receive(timeout=10)).type.name.startswith("CLOS"):
                    pass
            code = await asyncio.to_thread(server.process.wait, 10)
            return [ws.close_code for ws in clients], code, time.monotonic() - started

    codes, exit_code, elapsed = asyncio.run(scenario())
    assert codes == [1012, 1012, 1012]  # service restart: reconnect, to another container
    assert exit_code == 0
    assert elapsed < 10  # the platform's grace period, not a speed goal
    assert any("stopped" in line for line in server.log)


def upgrade_status(port: int) -> str:
    """The status code a new WebSocket handshake gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET /_ws/late HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        return sock.recv(1024).split(b" ", 2)[1].decode()


def test_a_drain_spreads_the_closes_and_keeps_the_health_check(make_server: Any) -> None:
    server: Server = make_server(DRAIN_SECONDS="2")
    count = 300

    async def scenario() -> tuple[list[float], list[int | None], list[int], list[str], int]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            clients = await asyncio.gather(
                *(session.ws_connect(f"{server.ws_base}/_ws/{i}") for i in range(count))
            )
            loop = asyncio.get_running_loop()
            closed_at: list[float] = []
            half_closed = asyncio.Event()

            async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> None:
                while not (await ws.receive(timeout=15)).type.name.startswith("CLOS"):
                    pass
                closed_at.append(loop.time())
                if len(closed_at) == count // 2:
                    half_closed.set()

            waiting = [asyncio.create_task(until_closed(ws)) for ws in clients]
            server.process.terminate()
            health: list[int] = []
            upgrades: list[str] = []
            await half_closed.wait()  # in the middle of the drain
            health.append((await asyncio.to_thread(server.get, "/cache-healthcheck?"))[0])
            upgrades.append(await asyncio.to_thread(upgrade_status, server.port))
            await asyncio.gather(*waiting)
            code = await asyncio.to_thread(server.process.wait, 10)
            return closed_at, [ws.close_code for ws in clients], health, upgrades, code

    closed_at, codes, health, upgrades, exit_code = asyncio.run(scenario())
    assert set(codes) == {1012}
    assert max(closed_at) - min(closed_at) > 1  # spread over the window, not all at once
    assert health == [200]
    assert upgrades == ["503"]  # no new client while draining
    assert exit_code == 0
