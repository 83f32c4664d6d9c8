"""A deploy's reconnect wave: thousands of clients come back at once, each with an old ``last_id``.

Against a server in bench mode (``BENCH=1``) on ``PORT``: an observer connects and ``BACK``
broadcasts are made; ``LIVE`` clients connect and a paced stream of broadcasts starts (one every
``INTERVAL_MS``); then ``WAVE`` clients connect at once (or spread at random over ``SPREAD_S``
seconds, as the shipped clients' first reconnect delay spreads them) with ``?last_id=`` just before
the first of the ``BACK`` broadcasts, so that each is replayed about ``BACK`` messages.

It measures how long the wave takes to be replayed (until every wave client has received the
broadcast that was newest when the wave began), the longest silence any live client saw meanwhile,
the health check's latency (``prober.py``, run alongside), how many wave clients were refused, cut
off or told of a gap, and the server's CPU time per replay (from ``/proc/PID/stat``). Prints one
JSON object. Usage: ``reconnect_wave.py '{"port": P, "pid": PID, "probe_out": "p.json"}'`` (also
``wave``, ``back``, ``live``, ``interval_ms`` and ``spread_s``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
DEFAULTS: dict[str, Any] = {
    "wave": 2000,
    "back": 1000,
    "live": 100,
    "interval_ms": 10,
    "spread_s": 0,
}


async def connect(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a WebSocket on ``path``; raise ``ConnectionError`` when the upgrade is refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
    writer.write(HANDSHAKE.format(path=path).encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101 "):
        writer.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode("latin1"))
    return reader, writer


async def frames(reader: asyncio.StreamReader) -> AsyncIterator[tuple[int, bytes]]:
    """Yield ``(opcode, payload)`` of every frame until the connection ends."""
    while True:
        try:
            head = await reader.readexactly(2)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        yield head[0] & 0x0F, await reader.readexactly(length)


@dataclass
class Observer:
    """A client that parses every frame and keeps the newest id and the arrival times."""

    newest_id: int = 0
    first_id: int | None = None
    arrivals: list[float] = field(default_factory=list)

    async def follow(self, reader: asyncio.StreamReader) -> None:
        """Read broadcasts until the connection ends."""
        async for opcode, payload in frames(reader):
            if opcode != 0x1 or not payload.startswith(b'{"id":'):
                continue
            self.newest_id = int(payload[6 : payload.index(b",")])
            if self.first_id is None:
                self.first_id = self.newest_id
            self.arrivals.append(time.monotonic())


async def replayed(
    port: int, last_id: int, marker: bytes, outcome: dict[str, int], delay: float
) -> float | None:
    """After ``delay``, reconnect with ``last_id``; return the seconds until ``marker`` arrives."""
    await asyncio.sleep(delay)
    started = time.monotonic()

    def count(what: str) -> None:
        outcome[what] = outcome.get(what, 0) + 1

    try:
        reader, writer = await connect(port, f"/_ws/wave?last_id={last_id}")
    except (ConnectionError, OSError) as error:
        count(f"refused: {error}")
        return None
    tail = b""
    try:
        while chunk := await reader.read(65536):
            seen = tail + chunk
            if marker in seen:
                count("replayed")
                return time.monotonic() - started
            if b'"type":"gap"' in seen:
                count("told of a gap")
                return None
            tail = chunk[-64:]
    except ConnectionError:
        pass
    finally:
        writer.close()
    count("closed by the server (cut off)")
    return None


def _gaps(times: list[float], since: float) -> list[float]:
    """The silences between consecutive ``times`` that ended after ``since``."""
    return [b - a for a, b in itertools.pairwise(times) if b >= since]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def get(port: int, path: str) -> None:
    """Send one GET and wait for the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await reader.read()
    writer.close()


async def run(config: dict[str, Any]) -> dict[str, Any]:
    """The whole scenario; return its figures."""
    port, pid = config["port"], config["pid"]
    observer = Observer()
    reader, observer_writer = await connect(port, "/_ws/observer")
    following = [asyncio.create_task(observer.follow(reader))]
    await get(port, f"/_bench/start?count={config['back']}&interval_ms=0")
    while observer.first_id is None or len(observer.arrivals) < config["back"]:
        await asyncio.sleep(0.05)
    first_id = observer.first_id
    live = [Observer() for _ in range(config["live"])]
    writers = [observer_writer]  # kept: a writer that is garbage-collected closes its connection
    for client in live:
        live_reader, live_writer = await connect(port, "/_ws/live")
        writers.append(live_writer)
        following.append(asyncio.create_task(client.follow(live_reader)))
    await get(port, f"/_bench/start?count=1000000&interval_ms={config['interval_ms']}")
    await asyncio.sleep(1)
    probe_out = Path(config["probe_out"])
    prober = subprocess.Popen([sys.executable, str(HERE / "prober.py"), str(port), str(probe_out)])
    await asyncio.sleep(0.5)
    outcome: dict[str, int] = {}
    cpu_before = cpu_seconds(pid)
    wave_started = time.monotonic()
    marker = b'"id":%d,' % observer.newest_id
    spread = random.Random(config["wave"])  # noqa: S311 - the same spread in every run
    times = await asyncio.gather(
        *(
            replayed(port, first_id - 1, marker, outcome, spread.uniform(0, config["spread_s"]))
            for _ in range(config["wave"])
        )
    )
    wave_seconds = time.monotonic() - wave_started
    cpu = cpu_seconds(pid) - cpu_before
    await asyncio.sleep(0.5)
    prober.send_signal(signal.SIGINT)
    prober.wait(10)
    health = json.loads(probe_out.read_text())
    probe_out.unlink()
    silences = [max(_gaps(c.arrivals, since=wave_started), default=0.0) for c in live]
    for task in following:
        task.cancel()
    for writer in writers:
        writer.close()
    done = sorted(t for t in times if t is not None)
    return {
        "wave": config["wave"],
        "back": config["back"],
        "live": config["live"],
        "interval_ms": config["interval_ms"],
        "outcome": outcome,
        "wave_seconds": round(wave_seconds, 3),
        "replay_p50_s": round(done[len(done) // 2], 3) if done else None,
        "replay_max_s": round(done[-1], 3) if done else None,
        "live_max_silence_ms": round(max(silences, default=0.0) * 1000, 1),
        "health": health,
        "server_cpu_s": round(cpu, 3),
        "cpu_per_replay_ms": round(cpu * 1000 / max(1, outcome.get("replayed", 0)), 3),
    }


def main() -> None:
    """Run the scenario described by the JSON in ``sys.argv[1]`` and print its figures."""
    config = {**DEFAULTS, **json.loads(sys.argv[1])}
    print(json.dumps(asyncio.run(run(config))))


if __name__ == "__main__":
    main()
