"""The fan-out's CPU per delivery in one process: two templates' hubs side by side, no sockets.

``run.py`` measures the fan-out end to end, and on a shared machine its figures swing by a factor
of two between runs. This times only the hub's write path: each template is rendered with a
package name of its own, both are imported here, and each hub gets ``--clients`` joined clients
whose transports are C no-ops (``deque(maxlen=0).append``, ``bool``, ``int``), then
``--deliveries`` calls of ``Hub.deliver``; the CPU time of those (``time.process_time``) per
delivery, the two hubs alternating for ``--runs`` runs each. Issue 25's figures come from it::

    python benchmarks/fan_out_cpu.py --before /work/main

Run it with an interpreter that has the generated app's dependencies (the test extra has them).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from rendering import render, user_settings_kept_out


class NoOpTransport:
    """A transport that takes every write at once, at the cost of a C call."""

    def __init__(self) -> None:
        self.write = collections.deque[bytes](maxlen=0).append
        self.is_closing = bool  # False
        self.get_write_buffer_size = int  # 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def cpu_per_delivery(package: str, clients: int, deliveries: int) -> float:
    """Microseconds of CPU per delivery of ``package``'s hub, to ``clients`` clients."""
    hub_module: Any = importlib.import_module(f"{package}.hub")
    broker: Any = importlib.import_module(f"{package}.broker")
    metrics: Any = importlib.import_module(f"{package}.metrics")
    hub = hub_module.Hub(
        broker.LocalBroker(),
        replay_size=100,
        channel_replay_size=10,
        max_client_buffer_bytes=1 << 20,
        publishes_per_second=1e9,
        channel_publishes_per_second=1e9,
        metrics=metrics.Metrics(),
    )
    await hub.start()
    sockets = [web.WebSocketResponse() for _ in range(clients)]
    for ws in sockets:
        hub.join(ws, NoOpTransport(), None)
    message = b'{"id":1,"data":12345}'
    started = time.process_time()
    for message_id in range(1, deliveries + 1):
        await hub.deliver(message_id, message)
    spent = time.process_time() - started
    for ws in sockets:
        hub.leave(ws)
    await hub.stop()
    return spent / (clients * deliveries) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the other template checkout")
    parser.add_argument("--template", type=Path, default=Path(__file__).parent.parent)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    templates = {"before": args.before, "after": args.template}
    with tempfile.TemporaryDirectory(prefix="fan-out-cpu-") as tmp:
        with user_settings_kept_out(Path(tmp)):
            for name, template in templates.items():
                project = render(template, Path(tmp) / name, package_name=f"{name}_hub")
                sys.path.insert(0, str(project / "src"))
        figures: dict[str, list[float]] = {name: [] for name in templates}
        for run in range(args.runs):
            for name in sorted(templates, reverse=bool(run % 2)):
                gc.collect()
                figures[name].append(
                    asyncio.run(cpu_per_delivery(f"{name}_hub", args.clients, args.deliveries))
                )
    for name, runs in figures.items():
        print(
            f"{name}: CPU per delivery min {min(runs):.3f} µs, "
            f"median {statistics.median(runs):.3f} µs ({args.runs} runs, {args.clients} clients)"
        )


if __name__ == "__main__":
    main()
