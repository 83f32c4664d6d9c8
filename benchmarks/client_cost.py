"""What the shipped Python client costs its own process: CPU per message and per reconnect (#24).

In the reconnect wave (``wave.py``), thousands of ``ReconnectingClient``s share two processes,
and those processes, not the server, decide when the last client is back: this measures what
each of the client's jobs costs there. A server (the rendered app, its ``service.py`` given
channels without presence open to all, as in ``wave.py``) runs in a process of its own;
``--clients`` of the project's own clients, in the measuring process, each hold ``--channels``
channels of a pool of ``--pool``. Measured, as CPU time of the clients' process
(``time.process_time``: the server's is not in it):

- ``us_per_first_connection``: from the first client's start until every client holds all of
  its channels, per client: the handshake, the batched subscribes, the ``subscribed`` answers;
- ``us_per_answer``: the same, per ``subscribed`` answer (the handshake shared out among them);
- ``us_per_live_message``: ``--live`` broadcasts on the default stream, one every
  ``--live-ms`` ms, per message received (what the wave's clients get four times a second);
- ``us_per_reconnect``: the server killed and started again, from the kill until every client
  is back with all its channels, per client (each reconnects after the default backoff, with
  ``last_id`` on every channel: the wave's work);
- ``gc_share``: the garbage collector's share of the CPU time of these three (it grows with
  the clients a process holds: ``--clients 4000`` is one of ``wave.py``'s two processes at
  8,000).

``--profile`` prints, on standard error, the functions that took the most CPU in the live
messages and in the reconnects (``cProfile``), each project's.

Every project's clients run against the same server, the last project's (the server is not what
is measured). Each project is measured ``--repetitions`` times in processes of their own,
alternating; the figures are the medians. Without ``--project``, renders this checkout's
committed template and the ``--before`` revision. Prints one JSON object per project and, given
two, the ratios (second / first). Usage:
``python benchmarks/client_cost.py --before main [--loop uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import http.client
import importlib
import io
import json
import logging
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from servers import measured

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIGURES = (
    "us_per_first_connection",
    "us_per_answer",
    "us_per_live_message",
    "us_per_reconnect",
    "gc_share",
)


class Collections:
    """The CPU time the garbage collector took in this process, counted from :meth:`start`."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self._started = 0.0

    def start(self) -> None:
        gc.callbacks.append(self._count)

    def _count(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.cpu += time.process_time() - self._started


COLLECTIONS = Collections()


class Phase:
    """The CPU time of one phase (and the garbage collector's in it), and its profile if asked."""

    def __init__(self, name: str, profile: bool) -> None:
        self.name = name
        self.profiler = cProfile.Profile() if profile else None
        self.cpu = 0.0
        self.gc_cpu = 0.0

    def __enter__(self) -> Phase:
        if self.profiler is not None:
            self.profiler.enable()
        self.cpu, self.gc_cpu = time.process_time(), COLLECTIONS.cpu
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cpu = time.process_time() - self.cpu
        self.gc_cpu = COLLECTIONS.cpu - self.gc_cpu
        if self.profiler is not None:
            self.profiler.disable()
            out = io.StringIO()
            pstats.Stats(self.profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(f"--- {self.name} ---\n{out.getvalue()}", file=sys.stderr)


def start_server(server: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """Run the rendered app on ``port``; return once its health check answers."""
    env = {
        "PYTHONPATH": server["src"],
        "PORT": str(port),
        "BENCH": "1",
        "MAX_CONNECTS_PER_SECOND": "100000",
        "MAX_SUBSCRIPTIONS": "100",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", server["package"]],
        env={**os.environ, **env},
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if get(port, "/cache-healthcheck?") == 200:
                return process
        time.sleep(0.02)
    process.kill()
    raise RuntimeError("the app did not start")


class Counts:
    """What the clients of one measuring process received, counted as it comes."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.complete = 0  # clients holding all of their channels on their current connection
        self.back = asyncio.Event()  # set once they all do
        self.default_stream = 0  # messages of the default stream (broadcasts, integers)
        self.broadcasts = 0  # of which the bench's broadcasts
        self.broadcasts_expected = 0
        self.broadcasts_done = asyncio.Event()

    def holds_all(self) -> None:
        """One more client holds all of its channels."""
        self.complete += 1
        if self.complete == self.clients:
            self.back.set()

    def received(self, data: object) -> None:
        """A client received a message of the default stream."""
        self.default_stream += 1
        if isinstance(data, dict) and "n" in data:
            self.broadcasts += 1
            if self.broadcasts == self.broadcasts_expected:
                self.broadcasts_done.set()


def get(port: int, path: str) -> int:
    """One GET on the app: its status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


async def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Every figure for the client of ``spec["package"]``, importable already."""
    COLLECTIONS.start()
    client_module = importlib.import_module(f"{spec['package']}.client")
    client_log = logging.getLogger(client_module.__name__)  # made, as in any program, not shown
    client_log.addHandler(logging.NullHandler())
    client_log.propagate = False
    port, clients, channels = spec["port"], spec["clients"], spec["channels"]
    server = start_server(spec["server"], port)
    url = f"ws://127.0.0.1:{port}/_ws/"
    rng = random.Random(1)  # noqa: S311 - not for secrets
    pool = [f"chat/bench-{n}" for n in range(spec["pool"])]
    counts = Counts(clients)
    held: list[set[str]] = []  # the channels each client holds on its current connection

    async def one(index: int) -> None:
        taken: set[str] = set()
        held.append(taken)

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "subscribed":
                taken.add(event["channel"])
                if len(taken) == channels:
                    counts.holds_all()

        address = {"X-Forwarded-For": f"10.7.{index // 250}.{index % 250}"}
        async with client_module.ReconnectingClient(url, on_event=on_event, headers=address) as c:
            for channel in rng.sample(pool, channels):
                await c.subscribe(channel)
            async for message in c:
                if message.channel is None:
                    counts.received(message.data)

    try:
        with Phase("first connection", False) as first:
            tasks = [asyncio.create_task(one(index)) for index in range(clients)]
            await counts.back.wait()
        await asyncio.sleep(1)  # what the first connections still receive (integers)

        counts.default_stream, counts.broadcasts_expected = 0, clients * spec["live"]
        query = f"/_bench/start?count={spec['live']}&interval_ms={spec['live_ms']}"
        with Phase("live messages", spec["profile"]) as live:
            await asyncio.to_thread(get, port, query)
            await counts.broadcasts_done.wait()
        live_messages = counts.default_stream

        counts.complete = 0
        counts.back.clear()
        for taken in held:
            taken.clear()
        with Phase("reconnects", spec["profile"]) as reconnects:
            server.kill()  # every client drops at once
            await asyncio.to_thread(server.wait)
            server = await asyncio.to_thread(start_server, spec["server"], port)
            await counts.back.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        server.kill()
    phases = (first, live, reconnects)
    return {
        "us_per_first_connection": round(first.cpu / clients * 1e6, 1),
        "us_per_answer": round(first.cpu / clients / channels * 1e6, 2),
        "us_per_live_message": round(live.cpu / live_messages * 1e6, 2),
        "us_per_reconnect": round(reconnects.cpu / clients * 1e6, 1),
        "gc_share": round(sum(p.gc_cpu for p in phases) / sum(p.cpu for p in phases), 3),
    }


def run(python: str, package: str, project: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """The figures of ``project``'s client, in a process of its own with ``python``."""
    spec = {**spec, "package": package}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project / "src"), str(HERE)])}
    return measured(python, __file__, spec, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="has the app's dependencies")
    parser.add_argument("--project", type=Path, action="append", help="a rendered project")
    parser.add_argument("--before", help="a revision to render and measure first (main)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--channels", type=int, default=60)
    parser.add_argument("--pool", type=int, default=600)
    parser.add_argument("--live", type=int, default=40, help="broadcasts on the default stream")
    parser.add_argument("--live-ms", type=int, default=25)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        spec = json.loads(args.measure)
        if spec["loop"] == "uvloop":
            result = importlib.import_module("uvloop").run(measure(spec))
        else:
            result = asyncio.run(measure(spec))
        print(json.dumps(result))
        return
    # Here only: the app's interpreter, which measures, may have no copier. ``wave`` is
    # benchmarks/wave.py (this folder comes first on the path), not the standard library's.
    from wave import OPEN_CHANNELS, free_port

    from rendering import package_of, render

    with tempfile.TemporaryDirectory() as where:
        projects = args.project or [
            render(REPO, Path(where) / f"{name}_app", ref)
            for name, ref in ([("before", args.before)] if args.before else [])
            + [("after", "HEAD")]
        ]
        for project in projects:
            service = project / "src" / package_of(project) / "service.py"
            if OPEN_CHANNELS not in service.read_text():
                service.write_text(service.read_text() + OPEN_CHANNELS)
        server = {"src": str(projects[-1] / "src"), "package": package_of(projects[-1])}
        spec = {
            "server": server,
            "loop": args.loop,
            "clients": args.clients,
            "channels": args.channels,
            "pool": args.pool,
            "live": args.live,
            "live_ms": args.live_ms,
            "profile": args.profile,
        }
        runs: list[list[dict[str, Any]]] = [[] for _ in projects]
        for _ in range(args.repetitions):
            for index, project in enumerate(projects):
                spec["port"] = free_port()
                runs[index].append(run(args.python, package_of(project), project, spec))
        results = []
        for project, measured in zip(projects, runs, strict=True):
            result = {key: statistics.median(m[key] for m in measured) for key in FIGURES}
            spread = {key: [m[key] for m in measured] for key in FIGURES}
            print(json.dumps({"project": project.name, **result, "runs": spread}), flush=True)
            results.append(result)
    if len(results) == 2:
        before, after = results
        ratios = {key: round(after[key] / before[key], 3) for key in FIGURES if before[key]}
        print(json.dumps({"ratios": ratios, "loop": args.loop, "clients": args.clients}))


if __name__ == "__main__":
    main()
