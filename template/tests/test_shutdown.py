"""SIGTERM, as deploys and `docker stop` send it: clients are told, the process exits in time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from conftest import Server


def test_sigterm_closes_clients_with_1001_and_exits_within_10_s(make_server: Any) -> None:
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
    assert codes == [1001, 1001, 1001]
    assert exit_code == 0
    assert elapsed < 10  # the platform's grace period, not a speed goal
    assert any("stopped" in line for line in server.log)
