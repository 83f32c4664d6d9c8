"""What accepting a WebSocket costs the server: the app, Node's ``ws``, and the floors beneath.

Issue 29's accept-rate goal, broken down. Each server runs alone, pinned to the server core; the
load generator (``loadgen.mjs``, pinned to the client core) opens ``--n`` WebSockets, 50
handshakes in flight, and closes them. For each run: connections opened per second (the
generator's figure, as the fan-out benchmark reports it) and the server's CPU time per
connection opened and closed (from ``/proc``, read before and a second after: steadier than the
rate on a shared machine). The servers:

- ``app``: the generated app, rendered from this checkout's template (or each ``--project``,
  named by its folder);
- ``node``: the Node baseline (``ws``), the reference of the ratios;
- ``handover``, ``aiohttp``, ``lean``: ``lean_probe.py``'s stacks, the floors of each way of
  serving a handshake: aiohttp answers it and hands the connection over (the app's design, with
  nothing of the app's own work); aiohttp's own WebSockets; ``websockets``' sans-I/O protocol
  answering it in front of any HTTP server.

Run it with any Python that has copier (the servers get their own cached virtualenvs)::

    python benchmarks/accept_cost.py --n 5000 --repetitions 3
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

from matrix import drive
from rendering import render, user_settings_kept_out
from servers import (
    NODE_BASELINE,
    Result,
    Server,
    app_server,
    ensure_node_baseline,
    free_port,
    log,
    started,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: The probe's stacks, each a floor beneath one way of serving a handshake.
PROBE_STACKS = ("handover", "aiohttp", "lean")
TICKS_PER_SECOND = 100


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


def accepting(port: int) -> bool:
    """Whether a server accepts TCP connections on ``port`` (not every stack speaks HTTP)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def accept_once(server: Server, path: str, n: int, work: Path) -> Result:
    """Open and close ``n`` WebSockets on ``server``; the rate and the server's CPU per one."""
    port = free_port()
    with started(server, port, {}, work, ready=accepting) as pid:
        before = cpu_seconds(pid)
        config = {"n": n, "burst": 0, "pacedRate": 0, "path": path}
        result = drive(HERE / "loadgen.mjs", port, pid, config, work / f"probe-{port}")
        time.sleep(1)  # the closes, handled once the generator has gone
        used = cpu_seconds(pid) - before
    if result["connected"] != n:
        raise RuntimeError(f"{server.name}: {result['connected']} of {n} connected")
    return {"per_second": result["connectPerSec"], "cpu_us": used / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="connections opened per run")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--project",
        type=Path,
        action="append",
        help="a rendered project, named by its folder; repeat it to compare (default: HEAD's)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=NODE_BASELINE,
        help="the Node baseline's folder",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="accept-cost-"))
    try:
        projects = args.project
        if not projects:
            with user_settings_kept_out(work):
                projects = [render(REPO, work / "app")]
        apps = [app_server(project.name, project) for project in projects]
        servers: list[tuple[Server, str]] = [(app, "/_ws/bench") for app in apps]
        node = Server("node", ["node", "server.js"], ensure_node_baseline(args.baseline))
        servers.append((node, "/_ws/bench"))
        probe = [apps[0].argv[0], str(HERE / "lean_probe.py"), "--serve"]
        servers += [(Server(stack, [*probe, stack], HERE), "/_ws/") for stack in PROBE_STACKS]
        runs: dict[str, list[Result]] = {server.name: [] for server, _ in servers}
        for repetition in range(args.repetitions):
            for server, path in servers:
                log(f"{server.name}, run {repetition + 1}")
                runs[server.name].append(accept_once(server, path, args.n, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    node_rate = statistics.median(run["per_second"] for run in runs["node"])
    print(f"{args.n} connections, medians of {args.repetitions}")
    print(f"{'server':10} {'opened/s':>9} {'x Node':>7} {'server CPU µs/connection':>25}")
    for name, results in runs.items():
        rate = statistics.median(run["per_second"] for run in results)
        cpu = statistics.median(run["cpu_us"] for run in results)
        print(f"{name:10} {rate:>9.0f} {rate / node_rate:>7.2f} {cpu:>25.0f}")


if __name__ == "__main__":
    main()
