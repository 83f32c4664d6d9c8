"""A simulated deploy: SIGTERM to the old process, every client reconnects to the new one.

``N`` clients connect to the old server (``old_port``); then the old server gets SIGTERM and each
client, the moment its connection ends, reconnects to the new server (``new_port``) with no delay
of its own, so that what spreads the reconnects is the old server's drain alone. It prints one JSON
object: the new server's accepted connections per 100 ms after the SIGTERM, the peak in any 100 ms,
how long the wave lasted, how long the old process took to exit, and the new server's health-check
latency (``prober.py``) meanwhile. Usage: ``deploy.py '{"old_port": P, "old_pid": PID,
"new_port": Q, "n": 2000, "probe_out": "probe.json"}'``
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from reconnect_wave import connect

HERE = Path(__file__).resolve().parent
BUCKET = 0.1


async def client(
    old_port: int, new_port: int, connected: asyncio.Event, accepted: list[float]
) -> None:
    """Connect to the old server; when that connection ends, connect to the new one at once."""
    reader, writer = await connect(old_port, "/_ws/deploy")
    connected.set()
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    writer.close()
    try:
        _new_reader, new_writer = await connect(new_port, "/_ws/deploy")
    except (ConnectionError, OSError):
        return
    accepted.append(time.monotonic())
    await asyncio.sleep(1)
    new_writer.close()


async def run(config: dict[str, Any]) -> dict[str, Any]:
    """The whole scenario; return its figures."""
    n = config["n"]
    accepted: list[float] = []
    events = [asyncio.Event() for _ in range(n)]
    tasks = [
        asyncio.create_task(client(config["old_port"], config["new_port"], event, accepted))
        for event in events
    ]
    for event in events:
        await event.wait()
    probe_out = Path(config["probe_out"])
    prober = subprocess.Popen(
        [sys.executable, str(HERE / "prober.py"), str(config["new_port"]), str(probe_out)]
    )
    await asyncio.sleep(0.5)
    sigterm = time.monotonic()
    os.kill(config["old_pid"], signal.SIGTERM)
    await asyncio.gather(*tasks)
    exited = await _exited(config["old_pid"]) - sigterm
    await asyncio.sleep(0.3)
    prober.send_signal(signal.SIGINT)
    prober.wait(10)
    health = json.loads(probe_out.read_text())
    probe_out.unlink()
    offsets = sorted(t - sigterm for t in accepted)
    buckets = [0] * (int(offsets[-1] / BUCKET) + 1 if offsets else 0)
    for offset in offsets:
        buckets[int(offset / BUCKET)] += 1
    return {
        "n": n,
        "reconnected": len(offsets),
        "first_s": round(offsets[0], 3) if offsets else None,
        "last_s": round(offsets[-1], 3) if offsets else None,
        "peak_per_100ms": max(buckets, default=0),
        "old_exit_s": round(exited, 3),
        "accepted_per_100ms": buckets,
        "health": health,
    }


async def _exited(pid: int) -> float:
    """Wait until ``pid`` has exited (gone, or a zombie its parent has not reaped); return when."""
    stat = Path(f"/proc/{pid}/stat")
    while True:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return time.monotonic()
        if state in ("Z", "X"):
            return time.monotonic()
        await asyncio.sleep(0.02)


def main() -> None:
    """Run the scenario described by the JSON in ``sys.argv[1]`` and print its figures."""
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))


if __name__ == "__main__":
    main()
