"""What a batched subscribe costs the server, in-process: the reconnect wave's work (issue 24).

Builds a rendered project's own ``Hub`` and ``Session`` (the in-process broker, no sockets:
each client's WebSocket and transport are stand-ins that count the transport's writes) and
answers batched subscribes of ``--channels`` channels (of a pool of ``--pool``, open to all,
without presence, as ``wave.py``'s clients hold them) as a reconnecting client sends them.
Measured, per project:

- ``us_per_subscribe``: ``--batches`` batches answered one after another, CPU time per
  channel (the median of ``--repetitions`` runs, each with clients of its own);
- ``writes_per_batch``: transport writes per batch;
- ``longest_iteration_ms``: ``--wave`` clients' batches arriving as after a deploy, at
  ``--arrivals`` a second (about the connections this app accepts a second; 0: all in the same
  iteration), while a task that only yields measures each event loop iteration: the longest
  one (CPU time; ``_wall_ms``, by the clock, counts the time other processes took the core too)
  is how long the health check and the live fan-out could wait behind the wave; ``wave_s``,
  from the first arrival until every batch is answered.

The garbage collector's threshold is the app's (``__main__``). CPU times are this thread's
(``time.thread_time``): other processes on the machine move them less than the clock.

Each project runs in a process of its own with ``--python`` (an interpreter with the generated
app's dependencies, uvloop among them), its ``src`` on the path. Without ``--project``, renders
this checkout's committed template, and the ``--before`` revision too. Prints one JSON object per
project and, given two, the ratios (second / first). Usage:
``python benchmarks/subscribe_cost.py --python VENV/bin/python --before main``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import inspect
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import make_mocked_request

from servers import measured

REPO = Path(__file__).resolve().parent.parent


class Transport:
    """The transport of a client that reads everything at once: counts writes and bytes."""

    def __init__(self) -> None:
        self.writes = 0
        self.written = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.written += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class WebSocket:
    """What the hub and a session need of a client's ``WebSocketResponse``."""

    closed = False


async def measure(package: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Every figure for the rendered ``package``, importable already."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(10_000, middle, oldest)  # as the app's __main__ sets it
    hooks = importlib.import_module(f"{package}.hooks")
    hub_module = importlib.import_module(f"{package}.hub")
    broker_module = importlib.import_module(f"{package}.broker")
    metrics_module = importlib.import_module(f"{package}.metrics")
    try:  # session.py since issue 25; protocol.py in the renders before
        session_module = importlib.import_module(f"{package}.session")
    except ModuleNotFoundError:
        session_module = importlib.import_module(f"{package}.protocol")
    session_options = {"max_subscriptions": 100, "max_new_channels_per_minute": 6000.0}
    if "max_connection_seconds" in inspect.signature(session_module.Session).parameters:
        session_options["max_connection_seconds"] = 3600.0

    class Open(hooks.Hooks):  # type: ignore[name-defined, misc]
        async def authorize_subscribe(self, connection: object, channel: str) -> bool:
            return True

    hub = hub_module.Hub(
        broker_module.LocalBroker(),
        replay_size=1000,
        channel_replay_size=100,
        max_client_buffer_bytes=1 << 20,
        publishes_per_second=1000.0,
        channel_publishes_per_second=50.0,
        metrics=metrics_module.Metrics(),
    )
    await hub.start()
    connection_callbacks: list[Any] = [lambda data: True]
    if "broadcast" in inspect.signature(hooks.Connection).parameters:
        connection_callbacks.append(lambda channel, data: hub.broadcast(data, channel))
    service = Open(None)
    pool = [f"chat/bench-{n}" for n in range(opts["pool"])]
    counter = iter(range(1 << 30))

    def client() -> tuple[Any, Transport, str, WebSocket]:
        """A new client joined to the hub: its session, transport, batched subscribe and ws."""
        ws, transport, index = WebSocket(), Transport(), next(counter)
        hub.join(ws, transport, None)
        handshake = make_mocked_request("GET", "/_ws/")
        connection = hooks.Connection(str(index), None, handshake, *connection_callbacks)
        session = session_module.Session(hub, service, ws, transport, connection, **session_options)
        start = index * 7 % opts["pool"]
        channels = [pool[(start + n) % opts["pool"]] for n in range(opts["channels"])]
        text = json.dumps({"type": "subscribe", "channels": [{"channel": c} for c in channels]})
        return session, transport, text, ws

    costs, writes = [], 0
    for _ in range(opts["repetitions"] + 1):  # the first warms up
        clients = [client() for _ in range(opts["batches"])]
        gc.collect()
        started = time.thread_time()
        for session, _transport, text, _ws in clients:
            await session.handle(text)
        costs.append((time.thread_time() - started) / (len(clients) * opts["channels"]))
        writes = sum(transport.writes for _session, transport, _text, _ws in clients)
    wave = [client() for _ in range(opts["wave"])]
    gc.collect()
    done = asyncio.Event()
    iterations: list[float] = []  # CPU seconds of each
    walls: list[float] = []  # and wall-clock seconds, preemptions by other processes included

    async def ticker() -> None:
        last, last_wall = time.thread_time(), time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0)
            now, wall = time.thread_time(), time.perf_counter()
            iterations.append(now - last)
            walls.append(wall - last_wall)
            last, last_wall = now, wall

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    answering = []
    for index, (session, _transport, text, _ws) in enumerate(wave):
        # Each batch arrives at its time: its task runs in the first iteration after it.
        due = started + index / opts["arrivals"] if opts["arrivals"] else started
        if (late := due - time.perf_counter()) > 0:
            await asyncio.sleep(late)
        answering.append(asyncio.create_task(session.handle(text)))
    await asyncio.gather(*answering)
    wave_s = time.perf_counter() - started
    done.set()
    await ticking
    answered = sum(hub.subscriptions(ws) for _session, _transport, _text, ws in wave)
    await hub.stop()
    return {
        "us_per_subscribe": round(statistics.median(costs[1:]) * 1e6, 2),
        "writes_per_batch": round(writes / opts["batches"], 2),
        "wave_clients": opts["wave"],
        "wave_subscribes": answered,
        "wave_s": round(wave_s, 3),
        "longest_iteration_ms": round(max(iterations) * 1e3, 2),
        "longest_iteration_wall_ms": round(max(walls) * 1e3, 2),
        "iterations": len(iterations),
    }


def run(python: str, project: Path, package: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The figures of ``project``, whose package is ``package``, in a process of its own."""
    spec = {**opts, "src": str(project / "src"), "package": package}
    return measured(python, __file__, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="has the app's dependencies")
    parser.add_argument("--project", type=Path, action="append", help="a rendered project")
    parser.add_argument("--before", help="a revision to render and measure first (main)")
    parser.add_argument("--channels", type=int, default=60)
    parser.add_argument("--pool", type=int, default=600)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--wave", type=int, default=2000)
    parser.add_argument("--arrivals", type=float, default=6000, help="batches a second")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        opts = json.loads(args.measure)
        sys.path.insert(0, opts["src"])
        try:
            uvloop = importlib.import_module("uvloop")  # the app's loop, when it is there
        except ImportError:
            result = asyncio.run(measure(opts["package"], opts))
        else:
            result = uvloop.run(measure(opts["package"], opts))
        print(json.dumps(result))
        return
    # Here only: the app's interpreter, which measures, has no copier.
    from rendering import package_of, render

    opts = {
        "channels": args.channels,
        "pool": args.pool,
        "batches": args.batches,
        "repetitions": args.repetitions,
        "wave": args.wave,
        "arrivals": args.arrivals,
    }
    with tempfile.TemporaryDirectory() as where:
        projects = args.project or [
            render(REPO, Path(where) / f"{name.replace('/', '-')}_app", ref)
            for name, ref in ([("before", args.before)] if args.before else [])
            + [("after", "HEAD")]
        ]
        results = []
        for project in projects:
            package = package_of(project)
            result = run(args.python, project, package, opts)
            print(json.dumps({"package": package, **result}), flush=True)
            results.append(result)
    if len(results) == 2:
        before, after = results
        ratios = {
            key: round(after[key] / before[key], 3)
            for key in ("us_per_subscribe", "writes_per_batch", "wave_s", "longest_iteration_ms")
            if before[key]
        }
        print(json.dumps({"ratios": ratios}))


if __name__ == "__main__":
    main()
