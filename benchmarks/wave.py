"""A deploy's reconnect wave with the shipped Python client, and two hostile scenarios beside it.

The template is rendered (default answers) and its app run with this interpreter, its
``service.py`` (user-owned) given channels without presence open to every client, as a site's
live widgets would be. The clients are the project's own ``ReconnectingClient``, with its
default backoff, spread over ``--workers`` processes, each from an address of its own
(``X-Forwarded-For``, as the platform's proxy sets it).

Scenarios (``--scenario``):

- ``wave``: ``--clients`` clients each hold ``--channels`` channels (of a pool of ``--pool``)
  and receive a live broadcast every ``--live-ms`` ms; the server is killed and started again on
  the same port. Measured: seconds until the last client is back with every channel (from the
  new process's first health check), against what ``MAX_CONNECTS_PER_SECOND`` allows; the health
  check's p99 during the wave (``prober.py``); the longest silence of the live stream any client
  saw once back (its interval subtracted); refused upgrades; clients closed with 4008; the new
  process's CPU time and the client processes' over the same time.
- ``flood``: the same wave while one address floods upgrades (as fast as the server answers,
  ``--flooders`` connections at once, never waiting).
- ``churn``: ``--churners`` clients each subscribe to a new channel and leave it ten times a
  second (half the allowance), for ``--seconds``; measured: the health check's p99, the longest
  silence of the default stream at a listener, clients closed, subscribes refused, CPU.

On a machine where the clients share the server's cores, ``--nice 10`` runs them niced, so
that the server gets the CPU it needs first (as on the platform, where they are not there).
The clients run on asyncio's own event loop, or on uvloop's with ``--client-loop uvloop``; with
``--client-gc app``, their processes collect garbage as the app's does (``__main__``: what is
there at the start frozen, a collection every 10,000 allocations instead of 700), as a process
holding thousands of clients, like the app holding thousands of connections, needs: with the
interpreter's defaults, half of a 4,000-client process's CPU is the garbage collector's
(``client_cost.py --clients 4000``).

Prints one JSON object per scenario. Usage:
``python benchmarks/wave.py --scenario all --clients 8000 --workers 2``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.client
import importlib
import itertools
import json
import logging
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PACKAGE = "realtime_app"
METRICS_TOKEN = "bench-metrics-token-0123456789"  # noqa: S105 - a benchmark's token
#: Appended to the rendered service.py: channels without presence, open to every client.
OPEN_CHANNELS = """

async def _open(self: Service, connection: Connection, channel: str) -> bool:
    return True


Service.authorize_subscribe = _open  # type: ignore[method-assign]
Service.has_presence = lambda self, channel: False  # type: ignore[method-assign]
"""


def render(where: Path) -> Path:
    """Render the template (this checkout, uncommitted changes included) into ``where``."""
    project = where / "realtime-app"
    subprocess.run(
        [sys.executable, "-m", "copier", "copy", "--defaults", "--trust", "--vcs-ref", "HEAD",
         "--quiet", str(REPO), str(project)],
        check=True,
    )  # fmt: skip
    service = project / "src" / PACKAGE / "service.py"
    service.write_text(service.read_text() + OPEN_CHANNELS)
    return project


def start(project: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Run the app on ``port``; return once its health check answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", PACKAGE],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project / "src"), "PORT": str(port), **env},
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if get(port, "/cache-healthcheck?")[0] == 200:
                return process
        time.sleep(0.02)
    process.kill()
    raise RuntimeError("the app did not start")


def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    """One GET (with a bearer ``token``): its status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def metric(port: int, name: str) -> float:
    """The sum of the samples of metric ``name`` (all labels)."""
    _, body = get(port, "/metrics", METRICS_TOKEN)
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def merge(counts: list[dict[str, int]]) -> dict[str, int]:
    """The counts of every worker, added up."""
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return total


# --- the clients' side: one worker process ----------------------------------------------------


async def worker(args: dict[str, Any]) -> None:
    """Run ``clients`` shipped clients; report on stdout, steered by lines on stdin."""
    sys.path.insert(0, args["src"])
    # The rendered package, on the path only once the template is rendered.
    ReconnectingClient = importlib.import_module(f"{PACKAGE}.client").ReconnectingClient

    url = f"ws://127.0.0.1:{args['port']}/_ws/"
    rng = random.Random(args["seed"])  # noqa: S311 - not for secrets
    closes: dict[str, int] = {}

    class CloseCodes(logging.Handler):
        """Counts the close codes the clients reconnect after (from their log)."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.msg.startswith("reconnecting in") and isinstance(record.args, tuple):
                code = str(record.args[1])
                closes[code] = closes.get(code, 0) + 1

    client_log = logging.getLogger("realtime_app.client")
    client_log.setLevel(logging.INFO)
    client_log.addHandler(CloseCodes())
    client_log.propagate = False
    pool = [f"chat/bench-{n}" for n in range(args["pool"])]
    live_s = args["live_ms"] / 1000
    states: list[dict[str, Any]] = []

    async def one(index: int) -> None:
        state: dict[str, Any] = {"taken": set(), "back_at": None, "arrivals": []}
        states.append(state)
        channels = rng.sample(pool, args["channels"])

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "subscribed":
                state["taken"].add(event["channel"])
                if len(state["taken"]) == len(channels) and state["back_at"] is None:
                    state["back_at"] = time.monotonic()
            elif event["type"] == "error":
                state.setdefault("errors", []).append(event["reason"])

        address = {"X-Forwarded-For": f"10.{args['seed']}.{index // 250}.{index % 250}"}
        async with ReconnectingClient(url, on_event=on_event, headers=address) as client:
            for channel in channels:
                await client.subscribe(channel)
            async for message in client:
                if message.channel is None and state["back_at"] is not None:
                    state["arrivals"].append(time.monotonic())

    tasks = []
    for index in range(args["clients"]):
        tasks.append(asyncio.create_task(one(index)))
        if index % 10 == 9:  # the first connections: at half the rate, so none is refused
            await asyncio.sleep(10 / args["pace"])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "reset":  # the server was killed: count every client's channels again
            for state in states:
                state["taken"], state["back_at"], state["arrivals"] = set(), None, []
            print(json.dumps({"reset": len(states)}), flush=True)
        elif line == "count":  # how many clients hold every channel now
            back = sum(s["back_at"] is not None for s in states)
            print(json.dumps({"back": back}), flush=True)
        elif line == "report":
            gaps = []
            for state in states:
                times = state["arrivals"]
                gaps += [b - a - live_s for a, b in itertools.pairwise(times)]
            print(
                json.dumps(
                    {
                        "back_at": [s["back_at"] for s in states],
                        "max_gap": max(gaps, default=None),
                        "errors": sum(len(s.get("errors", ())) for s in states),
                        "closes": closes,
                    }
                ),
                flush=True,
            )
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Workers:
    """The worker processes of one scenario."""

    def __init__(self, src: Path, port: int, clients: int, count: int, opts: Any) -> None:
        self.processes = []
        for n in range(count):
            spec = {
                "src": str(src), "port": port, "clients": clients // count, "seed": n + 1,
                "pool": opts.pool, "channels": opts.channels, "live_ms": opts.live_ms,
                "pace": opts.rate / 2 / count, "loop": opts.client_loop, "gc": opts.client_gc,
            }  # fmt: skip
            niced = ["nice", "-n", str(opts.nice)] if opts.nice else []
            self.processes.append(
                subprocess.Popen(
                    [*niced, sys.executable, __file__, "--worker", json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )

    def ask(self, line: str) -> list[dict[str, Any]]:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(line + "\n")
            process.stdin.flush()
        answers = []
        for process in self.processes:
            assert process.stdout is not None
            answers.append(json.loads(process.stdout.readline()))
        return answers

    def back(self) -> int:
        return sum(answer["back"] for answer in self.ask("count"))

    def cpu_seconds(self) -> float:
        """The CPU time of every worker process so far, added up."""
        return sum(cpu_seconds(process.pid) for process in self.processes)

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.wait(30)
            if process.poll() is None:
                process.kill()


async def flooder(port: int, connections: int) -> None:
    """A process of its own: flood upgrades until stdin closes, then print the statuses."""
    stop = asyncio.Event()
    counts: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = [asyncio.create_task(flood(port, stop, counts)) for _ in range(connections)]
    await reader.read()
    stop.set()
    await asyncio.gather(*tasks)
    print(json.dumps(counts), flush=True)


async def flood(port: int, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Upgrade from one address as fast as the server answers, never waiting."""
    request = (
        b"GET /_ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\n\r\n"
    )
    held = []
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.01)  # the server is restarting
            continue
        status = head.split(b" ", 2)[1].decode()
        counts[status] = counts.get(status, 0) + 1
        if status == "101":
            held.append(writer)
        else:
            writer.close()
    for writer in held:
        writer.close()


def run_wave(project: Path, opts: Any, flooding: bool) -> dict[str, Any]:
    """Kill the server under ``--clients`` clients and time their return to a new process."""
    port = free_port()
    env = {
        "METRICS_TOKEN": METRICS_TOKEN,
        "BENCH": "1",
        "MAX_CONNECTS_PER_SECOND": str(opts.rate),
        "MAX_SUBSCRIPTIONS": str(max(100, opts.channels)),
    }
    servers: list[subprocess.Popen[bytes]] = []
    try:
        return measure_wave(project, opts, flooding, port, env, servers)
    finally:
        for server in servers:
            server.kill()


def measure_wave(
    project: Path,
    opts: Any,
    flooding: bool,
    port: int,
    env: dict[str, str],
    servers: list[subprocess.Popen[bytes]],
) -> dict[str, Any]:
    """The wave itself: a server on ``port`` (kept in ``servers``), killed, then started again."""
    server = start(project, port, env)
    servers.append(server)
    workers = Workers(project / "src", port, opts.clients, opts.workers, opts)
    clients = opts.clients // opts.workers * opts.workers
    started = time.monotonic()
    while workers.back() < clients:
        if time.monotonic() - started > 600:
            raise RuntimeError("the clients did not all connect")
        time.sleep(1)
    print(f"{clients} clients connected in {time.monotonic() - started:.0f} s", file=sys.stderr)
    server.kill()  # the container dies: every client drops at once
    server.wait()
    killed = time.monotonic()
    workers.ask("reset")
    counts: dict[str, int] = {}
    server = start(project, port, env)
    servers.append(server)
    ready = time.monotonic()
    prober_out = Path(tempfile.mkstemp(suffix=".json")[1])
    prober = subprocess.Popen([sys.executable, str(HERE / "prober.py"), str(port), str(prober_out)])
    get(port, f"/_bench/start?count=1000000&interval_ms={opts.live_ms}")
    cpu_before = cpu_seconds(server.pid)
    clients_cpu_before = workers.cpu_seconds()

    flooding_process = None
    if flooding:
        flooding_process = subprocess.Popen(
            [sys.executable, __file__, "--flooder", f"{port},{opts.flooders}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    lags: list[float] = []
    arrivals: list[float] = []

    async def observe() -> None:
        """A client back already: when each live broadcast reaches it during the wave."""
        import aiohttp

        headers = {"X-Forwarded-For": "10.250.0.1"}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{port}/_ws/observer", headers=headers) as ws,
        ):
            async for frame in ws:
                if frame.type is aiohttp.WSMsgType.TEXT and frame.data.startswith('{"id"'):
                    arrivals.append(time.monotonic())

    async def wave() -> int:
        observer = asyncio.create_task(observe())
        while (back := await asyncio.to_thread(workers.back)) < clients:
            if time.monotonic() - ready > 300:
                break
            try:
                lags.append(await asyncio.to_thread(metric, port, "event_loop_lag_seconds"))
            except OSError:  # (timeouts too) a new connection waits for the server's accept
                lags.append(float("nan"))
            await asyncio.sleep(0.5)
        observer.cancel()
        await asyncio.gather(observer, return_exceptions=True)
        return back

    back = asyncio.run(wave())
    if flooding_process is not None:
        assert flooding_process.stdin is not None
        assert flooding_process.stdout is not None
        flooding_process.stdin.close()
        counts = json.loads(flooding_process.stdout.readline())
        flooding_process.wait(30)
    cpu = cpu_seconds(server.pid) - cpu_before
    clients_cpu = workers.cpu_seconds() - clients_cpu_before
    time.sleep(2)  # two more seconds of live broadcasts
    refused = metric(port, "refused_upgrades_total")
    reports = workers.ask("report")
    prober.send_signal(signal.SIGINT)
    prober.wait(10)
    server.send_signal(signal.SIGTERM)
    server.wait(30)
    workers.close()
    back_at = [t for report in reports for t in report["back_at"] if t is not None]
    last = max(back_at) - ready if back_at else None
    allowed = max(0.0, clients - 2 * opts.rate) / opts.rate
    gaps = [r["max_gap"] for r in reports if r["max_gap"] is not None]
    observed = [b - a - opts.live_ms / 1000 for a, b in itertools.pairwise(arrivals)]
    return {
        "scenario": "flood" if flooding else "wave",
        "clients": clients,
        "channels_each": opts.channels,
        "back": back,
        "last_back_s_after_ready": None if last is None else round(last, 2),
        "last_back_s_after_kill": None if last is None else round(last + ready - killed, 2),
        "restart_s": round(ready - killed, 2),
        "rate_allows_s": round(allowed, 2),
        "ratio_to_rate": None if last is None or not allowed else round(last / allowed, 2),
        "health": json.loads(prober_out.read_text()),
        "server_loop_lag_max_s": max(
            (round(lag, 3) for lag in lags if not math.isnan(lag)), default=None
        ),
        "metrics_scrapes_failed": sum(math.isnan(lag) for lag in lags),
        "live_gap_max_s_observer": round(max(observed), 3) if observed else None,
        "live_gap_max_s_clients": round(max(gaps), 3) if gaps else None,
        "refused_upgrades": refused,
        "flood": counts,
        "subscribe_errors": sum(r["errors"] for r in reports),
        "reconnects_by_close_code": merge([r["closes"] for r in reports]),  # the whole run
        "server_cpu_s": round(cpu, 2),
        "clients_cpu_s": round(clients_cpu, 2),
    }


async def churner(url: str, index: int, stop: asyncio.Event, totals: dict[str, int]) -> None:
    """Subscribe to a new channel and leave it, ten times a second, with the shipped client."""
    # The rendered package, on the path only once the template is rendered.
    ReconnectingClient = importlib.import_module(f"{PACKAGE}.client").ReconnectingClient

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "error":
            totals["refused"] = totals.get("refused", 0) + 1
        elif event["type"] == "subscribed":
            totals["subscribed"] = totals.get("subscribed", 0) + 1

    headers = {"X-Forwarded-For": f"10.9.{index // 250}.{index % 250}"}
    async with ReconnectingClient(url, on_event=on_event, headers=headers) as client:

        async def consume() -> None:
            async for _message in client:
                pass

        consumer = asyncio.create_task(consume())
        n = 0
        while not stop.is_set():
            await client.subscribe(f"chat/churn-{index}-{n}")
            await asyncio.sleep(0.1)
            await client.unsubscribe(f"chat/churn-{index}-{n}")
            n += 1
        totals["reconnects"] = totals.get("reconnects", 0) + client.reconnects
        consumer.cancel()


def run_churn(project: Path, opts: Any) -> dict[str, Any]:
    """``--churners`` clients churn new channels while the health check and a listener watch."""
    sys.path.insert(0, str(project / "src"))
    port = free_port()
    server = start(project, port, {"METRICS_TOKEN": METRICS_TOKEN, "TICK_SECONDS": "0.1"})
    prober_out = Path(tempfile.mkstemp(suffix=".json")[1])

    async def scenario() -> dict[str, Any]:
        import aiohttp

        stop = asyncio.Event()
        totals: dict[str, int] = {}
        url = f"ws://127.0.0.1:{port}/_ws/"
        tasks = [asyncio.create_task(churner(url, n, stop, totals)) for n in range(opts.churners)]
        await asyncio.sleep(2)
        prober = subprocess.Popen(
            [sys.executable, str(HERE / "prober.py"), str(port), str(prober_out)]
        )
        cpu_before = cpu_seconds(server.pid)
        arrivals = []
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{port}/_ws/") as listener,
        ):
            end = time.monotonic() + opts.seconds
            while time.monotonic() < end:
                message = json.loads(await listener.receive_str(timeout=30))
                if "id" in message:
                    arrivals.append(time.monotonic())
        cpu = cpu_seconds(server.pid) - cpu_before
        prober.send_signal(signal.SIGINT)
        prober.wait(10)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        gaps = [b - a - 0.1 for a, b in itertools.pairwise(arrivals)]
        return {
            "scenario": "churn",
            "churners": opts.churners,
            "seconds": opts.seconds,
            "health": json.loads(prober_out.read_text()),
            "max_default_stream_gap_s": round(max(gaps), 3) if gaps else None,
            "subscribed": totals.get("subscribed", 0),
            "subscribes_refused": totals.get("refused", 0),
            "reconnects": totals.get("reconnects", 0),
            "refused_new_channels": metric(port, "refused_new_channels_total"),
            "channels_now": metric(port, "channels "),
            "server_cpu_s": round(cpu, 2),
        }

    try:
        return asyncio.run(scenario())
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["wave", "flood", "churn", "all"], default="all")
    parser.add_argument("--clients", type=int, default=8000)
    parser.add_argument("--channels", type=int, default=60)
    parser.add_argument("--pool", type=int, default=600)
    parser.add_argument("--rate", type=int, default=1000, help="MAX_CONNECTS_PER_SECOND")
    parser.add_argument("--live-ms", type=int, default=250)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--nice", type=int, default=0, help="niceness of the clients: the server goes first"
    )
    parser.add_argument("--client-loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--client-gc", choices=["default", "app"], default="default")
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--churners", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--flooder", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        spec = json.loads(opts.worker)
        if spec["gc"] == "app":  # as the app's __main__
            gc.freeze()
            _, middle, oldest = gc.get_threshold()
            gc.set_threshold(10_000, middle, oldest)
        if spec["loop"] == "uvloop":
            importlib.import_module("uvloop").run(worker(spec))
        else:
            asyncio.run(worker(spec))
        return
    if opts.flooder:
        port, connections = map(int, opts.flooder.split(","))
        asyncio.run(flooder(port, connections))
        return
    with tempfile.TemporaryDirectory() as where:
        project = render(Path(where))
        if opts.scenario in ("wave", "all"):
            print(json.dumps(run_wave(project, opts, flooding=False)), flush=True)
        if opts.scenario in ("flood", "all"):
            print(json.dumps(run_wave(project, opts, flooding=True)), flush=True)
        if opts.scenario in ("churn", "all"):
            print(json.dumps(run_churn(project, opts)), flush=True)


if __name__ == "__main__":
    main()
