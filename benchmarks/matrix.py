"""The load: each kind of run of the fan-out benchmark, against fresh servers, and how to read a
load generator's result.

``Bench`` starts a fresh server for every run (``servers.started``) and drives it with the load
generator (``loadgen.mjs``, pinned to the client core) or with one of the scripts beside it
(``slowclient.py``, ``reconnect_wave.py``, ``deploy.py``), alternating the servers' order from one
repetition to the next.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from servers import PINNED_CLIENT, Result, Server, free_port, log, run, started

HERE = Path(__file__).resolve().parent
#: Deliveries per burst phase: the burst's broadcast count is this divided by N (at least 20).
BURST_DELIVERIES = 300_000
#: Offered rate of the paced phase, below either server's capacity, for the latency figures.
PACED_RATE = 20_000
#: The capacity ladder (websocket-bench's method): clients at each step, broadcasts per second to
#: all of them, and the p95 latency of a delivery (server stamp to client) a step must stay under;
#: the last broadcast must also arrive within that bound of its scheduled time (see lateness_ms).
CAPACITY_STEPS = (1000, 2000, 3000, 5000, 7500, 10_000, 12_500, 15_000, 17_500)
CAPACITY_BROADCASTS_PER_S = 10
CAPACITY_P95_MS = 500.0
#: The reconnect waves: clients all at once (the worst case), and spread as the shipped clients'
#: first reconnect delay spreads a deploy's wave (a random 0-5 s); label: spread in seconds.
WAVES = {"all at once": 0, "spread over 5 s": 5}


def phase(result: Result, name: str) -> Result | None:
    """The load generator's figures of one phase (``burst`` or ``paced``), if it ran."""
    return next((p for p in result.get("phases", []) if p["phase"] == name), None)


def field(name: str, key: str) -> Callable[[Result], float | None]:
    """A reader of one figure of the phase ``name``."""

    def read(result: Result) -> float | None:
        found = phase(result, name)
        return None if found is None else found.get(key)

    return read


def drive(loadgen: Path, port: int, pid: int, config: Result, probe_prefix: Path) -> Result:
    """Run the load generator pinned to the client core; return its JSON result."""
    prober = {"cmd": [sys.executable, str(HERE / "prober.py")], "outPrefix": str(probe_prefix)}
    config = {"port": port, "serverPid": pid, "prober": prober, **config}
    argv = [*PINNED_CLIENT, "node", str(loadgen), json.dumps(config)]
    output = run(argv, timeout=450)
    result: Result = json.loads(output.strip().splitlines()[-1])
    if "error" in result:
        raise RuntimeError(f"load generator: {result['error']}")
    return result


@dataclass
class Bench:
    """The servers under test and where their runs keep their files."""

    servers: list[Server]
    loadgen: Path
    work: Path
    repetitions: int
    runs: int = 0
    #: Socket.IO's clients on the app rendered with ``socketio_server``: in the fan-out only.
    socketio: Server | None = None

    def alternate(self, servers: list[Server] | None = None) -> Iterator[tuple[int, Server]]:
        """Yield (repetition, server), reversing the servers' order every other repetition."""
        servers = self.servers if servers is None else servers
        for rep in range(self.repetitions):
            for server in servers if rep % 2 == 0 else servers[::-1]:
                yield rep, server

    def once(self, server: Server, config: Result, env: dict[str, str] | None = None) -> Result:
        """Start a fresh ``server``, drive it with ``config`` and stop it."""
        self.runs += 1
        port = free_port()
        with started(server, port, env or {}, self.work) as pid:
            config = {**config, **server.loadgen}
            return drive(self.loadgen, port, pid, config, self.work / f"probe-{self.runs}")

    def fan_out(self, n: int) -> dict[str, list[Result]]:
        """Burst and paced phases at N clients, every repetition, per server (and Socket.IO's)."""
        config = {"n": n, "burst": max(20, BURST_DELIVERIES // n), "pacedRate": PACED_RATE}
        servers = [*self.servers, *([self.socketio] if self.socketio else [])]
        results: dict[str, list[Result]] = {s.name: [] for s in servers}
        for rep, server in self.alternate(servers):
            log(f"N={n} rep {rep + 1} {server.name}")
            results[server.name].append(self.once(server, config))
        return results

    def channels(self, n: int, layouts: tuple[int, ...]) -> dict[str, list[Result]]:
        """The app alone, N clients: the default stream (0), then N clients over K channels."""
        app = self.servers[0]
        results: dict[str, list[Result]] = {str(k): [] for k in layouts}
        for rep in range(self.repetitions):
            for k in layouts:
                reach = n // k if k else n  # clients per broadcast
                burst = max(20, BURST_DELIVERIES // reach)
                burst -= burst % k if k else 0  # every channel gets as many broadcasts
                config = {"n": n, "burst": burst, "pacedRate": PACED_RATE, "channels": k}
                log(f"channels: N={n} over {k or 'no'} channels, rep {rep + 1}")
                results[str(k)].append(self.once(app, config))
        return results

    def slow_client(self, n: int, burst: int, limit: int) -> dict[str, dict[str, list[Result]]]:
        """A burst with and without one client that never reads, per server."""
        config = {"n": n, "burst": burst, "pacedRate": 0}
        env = {"MAX_CLIENT_BUFFER_BYTES": str(limit)}
        results: dict[str, dict[str, list[Result]]] = {
            s.name: {"alone": [], "with_slow": []} for s in self.servers
        }
        for rep, server in self.alternate():
            log(f"slow client rep {rep + 1} {server.name}")
            results[server.name]["alone"].append(self.once(server, config, env))
            results[server.name]["with_slow"].append(self._with_slow(server, config, env))
        return results

    def _with_slow(self, server: Server, config: Result, env: dict[str, str]) -> Result:
        self.runs += 1
        port = free_port()
        with started(server, port, env, self.work) as pid:
            slow = subprocess.Popen(
                [*PINNED_CLIENT, sys.executable, str(HERE / "slowclient.py"), str(port), "600"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert slow.stdout is not None
            assert slow.stdin is not None
            handshake = json.loads(slow.stdout.readline())
            try:
                result = drive(self.loadgen, port, pid, config, self.work / f"probe-{self.runs}")
            finally:
                slow.stdin.close()  # the slow client drains what is left and reports
                report = json.loads(slow.stdout.readline() or "{}")
                slow.wait(timeout=10)
        return {**result, "slowClient": {**handshake, **report}}

    def wave(self, config: Result) -> dict[str, list[Result]]:
        """Reconnect waves (``reconnect_wave.py``) against each server that replays."""
        results: dict[str, list[Result]] = {s.name: [] for s in self.servers if s.replays}
        for rep, server in self.alternate():
            if not server.replays:
                continue
            log(f"reconnect wave rep {rep + 1} {server.name}")
            self.runs += 1
            port = free_port()
            # Room for the replayed broadcasts and the live ones made while the wave is served.
            env = {"REPLAY_SIZE": str(2 * config["back"])}
            with started(server, port, env, self.work) as pid:
                probe = self.work / f"probe-{self.runs}.json"
                wave_config = {"port": port, "pid": pid, "probe_out": str(probe), **config}
                argv = [*PINNED_CLIENT, sys.executable, str(HERE / "reconnect_wave.py")]
                output = run([*argv, json.dumps(wave_config)], timeout=600)
                results[server.name].append(json.loads(output.strip().splitlines()[-1]))
        return results

    def deploy(self, n: int, drains: Sequence[float]) -> dict[str, list[Result]]:
        """A deploy of the app (``deploy.py``) per ``DRAIN_SECONDS`` value, per repetition."""
        app = self.servers[0]
        results: dict[str, list[Result]] = {f"drain {d:g} s": [] for d in drains}
        for rep in range(self.repetitions):
            for drain in drains if rep % 2 == 0 else drains[::-1]:
                log(f"deploy of {n} clients rep {rep + 1}, DRAIN_SECONDS={drain:g}")
                self.runs += 1
                old_port = free_port()
                new_port = free_port()
                while new_port == old_port:
                    new_port = free_port()
                env = {"DRAIN_SECONDS": str(drain)}
                with (
                    started(app, old_port, env, self.work) as old_pid,
                    started(app, new_port, {}, self.work),
                ):
                    config = {
                        "old_port": old_port,
                        "old_pid": old_pid,
                        "new_port": new_port,
                        "n": n,
                        "probe_out": str(self.work / f"probe-{self.runs}.json"),
                    }
                    argv = [*PINNED_CLIENT, sys.executable, str(HERE / "deploy.py")]
                    output = run([*argv, json.dumps(config)], timeout=300)
                    results[f"drain {drain:g} s"].append(
                        json.loads(output.strip().splitlines()[-1])
                    )
        return results

    def idle(self, n: int, hold: float) -> dict[str, list[Result]]:
        """N idle connections held for ``hold`` seconds, per server."""
        config = {"n": n, "burst": 0, "pacedRate": 0, "holdSecs": hold, "conc": 100}
        results: dict[str, list[Result]] = {s.name: [] for s in self.servers}
        for rep, server in self.alternate():
            log(f"{n} idle connections rep {rep + 1} {server.name}")
            results[server.name].append(self.once(server, config))
        return results

    def capacity(self, steps: Sequence[int]) -> dict[str, list[Result]]:
        """Climb ``steps`` of clients per server until a step's p95 latency passes the limit.

        Each step is a fresh server and N new clients, then ``CAPACITY_BROADCASTS_PER_S``
        broadcasts a second to all of them for 5 s. A step fails when the p95 latency of its
        deliveries or the lateness of its last one reaches ``CAPACITY_P95_MS``, or when a client
        could not connect or missed a delivery; the steps above it are not run.
        """
        results: dict[str, list[Result]] = {s.name: [] for s in self.servers}
        for server in self.servers:
            for n in steps:
                log(f"capacity: {n} clients, {server.name}")
                config = {
                    "n": n,
                    "burst": 0,
                    "pacedRate": n * CAPACITY_BROADCASTS_PER_S,
                    "pacedSecs": 5,
                    "conc": 100,
                }
                result = self.once(server, config)
                results[server.name].append(result)
                if not within_capacity(result):
                    break
        return results


def lateness_ms(result: Result) -> float | None:
    """How long after its scheduled time the paced phase's last broadcast was delivered.

    Each broadcast is stamped when the server actually sends it, so a server that falls behind
    its schedule shows no growing latency (coordinated omission); the phase's length does.
    """
    paced = phase(result, "paced")
    if paced is None:
        return None
    scheduled_s = (paced["count"] - 1) * paced["intervalMs"] / 1000
    return max(0.0, (float(paced["seconds"]) - float(scheduled_s)) * 1000)


def within_capacity(result: Result) -> bool:
    """Whether a capacity step held: every client connected and served, in time."""
    paced = phase(result, "paced")
    if paced is None or result["connected"] < result["cfg"]["n"] or not paced["complete"]:
        return False
    late = lateness_ms(result)
    return paced["latP95ms"] < CAPACITY_P95_MS and late is not None and late < CAPACITY_P95_MS
