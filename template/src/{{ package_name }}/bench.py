"""Bench mode (``BENCH=1``): broadcasts on demand, for side-by-side fan-out benchmarks.

``GET /_bench/start?count=M&interval_ms=I`` answers at once and then makes M broadcasts of
``{"n": k, "t": <microseconds since the epoch>}`` through the same hub and fan-out code as real
messages: back to back when I is 0 (yielding to the event loop in between), else on a drift-free
schedule of one every I milliseconds. With ``&channels=K`` they go to the channels
``chat/bench-0`` to ``chat/bench-<K-1>`` in turn instead of the default stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from .hub import Hub

HUB_KEY = web.AppKey("bench_hub", Hub)
#: The runs in progress, each until it has made its broadcasts or the app stops.
RUNS_KEY = web.AppKey("bench_runs", set[asyncio.Task[None]])


async def start(request: web.Request) -> web.Response:
    """Start a benchmark run: ``count`` (1-1,000,000), ``interval_ms`` (0-60,000), ``channels``."""
    try:
        count = int(request.query.get("count", "1"))
        interval_ms = float(request.query.get("interval_ms", "0"))
        channels = int(request.query.get("channels", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="count, interval_ms and channels must be numbers") from None
    if not (1 <= count <= 1_000_000 and 0 <= interval_ms <= 60_000 and 0 <= channels <= 100_000):
        raise web.HTTPBadRequest(
            text="count must be 1-1000000, interval_ms 0-60000, channels 0-100000"
        )
    runs = request.app[RUNS_KEY]
    task = asyncio.create_task(_run(request.app[HUB_KEY], count, interval_ms / 1000, channels))
    runs.add(task)
    task.add_done_callback(runs.discard)
    return web.Response(text="started", headers={"Cache-Control": "no-store"})


async def _run(hub: Hub, count: int, interval: float, channels: int) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(1, count + 1):
        channel = f"chat/bench-{n % channels}" if channels else None
        await hub.broadcast({"n": n, "t": time.time_ns() // 1000}, channel)
        if interval:
            await asyncio.sleep(max(0.0, started + n * interval - loop.time()))
        else:
            await asyncio.sleep(0)


async def _cancel_runs_at_exit(app: web.Application) -> AsyncIterator[None]:
    """When the app stops, cancel the runs still broadcasting and wait until they have ended."""
    yield
    in_progress = app[RUNS_KEY]
    runs = list(in_progress)
    for task in runs:
        task.cancel()
    await asyncio.gather(*runs, return_exceptions=True)


def setup(app: web.Application, hub: Hub) -> None:
    """Add the bench route to ``app``; its runs end when the app stops.

    Call it after the hub's own cleanup context is registered, so that the runs are cancelled
    before the hub stops (a drain still sees them broadcast).
    """
    app[HUB_KEY] = hub
    app[RUNS_KEY] = set()
    app.router.add_get("/_bench/start", start)
    app.cleanup_ctx.append(_cancel_runs_at_exit)
