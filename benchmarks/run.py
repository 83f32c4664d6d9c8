"""Fan-out benchmark: the generated app side by side with its peers, on the same load.

One command (``python benchmarks/run.py``) renders a project from a committed snapshot of this
template with default answers, installs its dependencies in a cached virtualenv, starts it in bench
mode and, when their folders exist, the peers too: the Node baseline (``ws``) and python-websockets'
``broadcast()`` on uvloop. It drives each with the same load generator, server on core 0 and load
generator and health prober on core 1, alternating the servers, and prints medians with their
ratios to the baseline, Socket.IO's fan-out beside the raw one, a capacity ladder (clients reached
while the p95 latency of a broadcast stays under 500 ms), a slow-client run, 10,000 idle
connections, copier's render timings and the issue's goals, met or not. ``--json`` keeps every
run's raw results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import copier

from vip_skeleton.check import free_port
from vip_skeleton.source import import_snapshot

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vip-skeleton-bench"
PINNED_SERVER, PINNED_CLIENT = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
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
#: python-websockets and uvloop for the Python peer, the ranges it was measured with.
PEER_REQUIREMENTS = ["websockets>=17,<18", "uvloop>=0.21,<1"]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}

Result = dict[str, Any]
#: The server built from ``--before``, an earlier template, measured side by side with this one.
BEFORE = "before"
#: Admission control off for every build of the app: the bench measures how fast it can accept.
UNLIMITED_ADMISSION = {"MAX_CONNECTS_PER_SECOND": "1000000"}
#: The peers' names: the Node baseline, the reference of every ratio, and the best Python peer.
NODE, WEBSOCKETS = "node", "websockets"
#: The app rendered with ``socketio_server`` yes, its clients speaking Socket.IO on /socket.io/.
SOCKETIO = "socketio"


@dataclass(frozen=True)
class Server:
    """How to start one server under test (it must speak the bench protocol)."""

    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    #: Whether it replays missed broadcasts on ``?last_id=`` (the generated app does).
    replays: bool = False
    #: What the load generator is told besides the run's configuration (e.g. its protocol).
    loadgen: Result = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """One figure of a load-generator run: how to read it and which direction is better."""

    label: str
    read: Callable[[Result], float | None]
    higher_is_better: bool


def _phase(result: Result, name: str) -> Result | None:
    return next((p for p in result.get("phases", []) if p["phase"] == name), None)


def _field(phase: str, key: str) -> Callable[[Result], float | None]:
    def read(result: Result) -> float | None:
        found = _phase(result, phase)
        return None if found is None else found.get(key)

    return read


def _cpu_per_delivery(result: Result) -> float | None:
    """Server CPU (us) per delivery in the burst, from fields both load generators print."""
    burst = _phase(result, "burst")
    if not burst or not burst["delivered"]:
        return None
    cpu_s = float(burst["serverCpuPct"]) / 100 * float(burst["phaseWall"])
    return cpu_s * 1e6 / float(burst["delivered"])


def _health_p99(result: Result) -> float | None:
    burst = _phase(result, "burst")
    p99: float | None = (burst.get("healthcheck") or {}).get("p99") if burst else None
    return p99


METRICS = (
    Metric("connections/s", lambda r: r.get("connectPerSec"), higher_is_better=True),
    Metric("RSS KB/connection", lambda r: r.get("rssPerConnKb"), higher_is_better=False),
    Metric("deliveries/s (burst)", _field("burst", "deliveriesPerSec"), higher_is_better=True),
    Metric("latency p50 ms (burst)", _field("burst", "latP50ms"), higher_is_better=False),
    Metric("latency p99 ms (burst)", _field("burst", "latP99ms"), higher_is_better=False),
    Metric("latency p50 ms (paced)", _field("paced", "latP50ms"), higher_is_better=False),
    Metric("latency p95 ms (paced)", _field("paced", "latP95ms"), higher_is_better=False),
    Metric("latency p99 ms (paced)", _field("paced", "latP99ms"), higher_is_better=False),
    Metric("server CPU us/delivery", _cpu_per_delivery, higher_is_better=False),
    Metric("health p99 ms (burst)", _health_p99, higher_is_better=False),
)


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds the report only."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], cwd: Path | None = None, **kwargs: Any) -> str:
    """Run a command to completion and return its stdout."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True, **kwargs)
    return str(done.stdout)


def git(cwd: Path, *args: str) -> None:
    """Run git in ``cwd`` with a fixed identity."""
    run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV})


# ---- rendering -----------------------------------------------------------------------------


def render(snapshot: Path, dest: Path, ref: str = "HEAD", **answers: object) -> Path:
    """Render the snapshot at ``ref`` into ``dest`` with default answers but ``answers``."""
    copier.run_copy(str(snapshot), str(dest), data=answers, defaults=True, vcs_ref=ref, quiet=True)
    return dest


def time_renders(snapshot: Path, work: Path, repetitions: int) -> dict[str, float]:
    """Median wall times (s) of ``copier copy`` and of ``copier update`` from v1 to v2."""
    readme = snapshot / "template" / "README.md.jinja"
    readme.write_text(readme.read_text() + "\n<!-- v2: a trivial change -->\n")
    git(snapshot, "commit", "-q", "-am", "trivial change")
    git(snapshot, "tag", "v2")
    copier_cli = [sys.executable, "-m", "copier"]
    copies, updates = [], []
    for i in range(repetitions):
        started = time.perf_counter()
        run(
            [
                *copier_cli,
                "copy",
                "-q",
                "--defaults",
                "-r",
                "HEAD",
                str(snapshot),
                str(work / f"c{i}"),
            ]
        )
        copies.append(time.perf_counter() - started)
        project = render(snapshot, work / f"u{i}", ref="v1")
        git(project, "init", "-q", "-b", "main")
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "generated at v1")
        started = time.perf_counter()
        run([*copier_cli, "update", "-q", "--defaults", "--trust", "-r", "v2"], cwd=project)
        updates.append(time.perf_counter() - started)
        if "trivial change" not in (project / "README.md").read_text():
            raise RuntimeError("copier update did not apply the v2 change")
    return {"copy_s": statistics.median(copies), "update_s": statistics.median(updates)}


# ---- servers -------------------------------------------------------------------------------


def package_of(project: Path) -> str:
    """The import name of a rendered project's package (it follows the project's folder name)."""
    return next(p.parent.name for p in (project / "src").glob("*/__main__.py"))


def project_requirements(project: Path) -> list[str]:
    """The project's dependencies (not the project itself, which runs from its src/)."""
    dependencies: list[str] = tomllib.loads((project / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    return dependencies


def ensure_venv(deps: list[str]) -> Path:
    """Return the Python of a cached virtualenv holding ``deps``."""
    key = hashlib.sha256(json.dumps([sys.version, deps]).encode()).hexdigest()[:12]
    venv = CACHE / f"venv-{key}"
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating {venv}")
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(python), "-m", "pip", "install", "-q", *deps])
    return python


def ensure_node_baseline(source: Path) -> Path:
    """Return a folder with the baseline and its node_modules (installed in a cached copy)."""
    if (source / "node_modules").is_dir():
        return source
    digest = hashlib.sha256()
    for name in ("package.json", "server.js"):
        digest.update((source / name).read_bytes())
    copy = CACHE / f"node-baseline-{digest.hexdigest()[:12]}"
    if not (copy / "node_modules").is_dir():
        log(f"npm install in {copy}")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)  # the source may be read-only
        run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=copy)
    return copy


def healthy(port: int) -> bool:
    """Whether the server answers its health check."""
    try:
        url = f"http://127.0.0.1:{port}/cache-healthcheck?"
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@contextmanager
def started(server: Server, port: int, extra_env: dict[str, str], logs: Path) -> Iterator[int]:
    """Start ``server`` pinned to the server core; yield its pid; stop it with SIGTERM."""
    env = {**os.environ, **server.env, **extra_env, "PORT": str(port), "BENCH": "1"}
    with (logs / f"{server.name}-{port}.log").open("w") as log_file:
        process = subprocess.Popen(
            [*PINNED_SERVER, *server.argv],
            cwd=server.cwd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while not healthy(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{server.name} did not start, see {log_file.name}")
                time.sleep(0.1)
            yield process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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


# ---- the bench matrix ----------------------------------------------------------------------


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
    paced = _phase(result, "paced")
    if paced is None:
        return None
    scheduled_s = (paced["count"] - 1) * paced["intervalMs"] / 1000
    return max(0.0, (float(paced["seconds"]) - float(scheduled_s)) * 1000)


def within_capacity(result: Result) -> bool:
    """Whether a capacity step held: every client connected and served, in time."""
    paced = _phase(result, "paced")
    if paced is None or result["connected"] < result["cfg"]["n"] or not paced["complete"]:
        return False
    late = lateness_ms(result)
    return paced["latP95ms"] < CAPACITY_P95_MS and late is not None and late < CAPACITY_P95_MS


# ---- report --------------------------------------------------------------------------------


def median(values: Sequence[float | None]) -> float | None:
    """Median of the known values (None when there is none)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(value: float | None) -> str:
    """A figure with three significant digits, or a dash."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ratio(app: float | None, base: float | None) -> float | None:
    """The app's figure over the baseline's."""
    return app / base if app is not None and base else None


def fan_out_table(n: int, results: dict[str, list[Result]], app: str) -> Result:
    """Print the medians at one N, every server's with its ratio to Node's; return them."""
    medians = {
        name: {m.label: median([m.read(r) for r in runs]) for m in METRICS}
        for name, runs in results.items()
    }
    others = [name for name in results if name != app]
    base = NODE if NODE in results else None
    print(f"\nN={n}  (medians of {len(results[app])}; ratios: {app} / each other server)")
    for name, runs in results.items():
        if short := [r["connected"] for r in runs if r["connected"] < n]:
            print(
                f"  WARNING: {name} connected only {short} of {n}: its figures are not comparable"
            )
    print(f"  {'figure':26} {app:>10}" + "".join(f" {name:>10} {'ratio':>6}" for name in others))
    for m in METRICS:
        a = medians[app][m.label]
        line = f"  {m.label:26} {fmt(a):>10}"
        for name in others:
            b = medians[name][m.label]
            line += f" {fmt(b):>10} {fmt(ratio(a, b)):>6}"
        r = ratio(a, medians[base][m.label]) if base else None
        if r is not None:
            line += "  better" if (r >= 1) == m.higher_is_better else "  worse"
        print(line)
    return medians


def socketio_table(n: int, medians: Result, app: str) -> Result:
    """Print Socket.IO's medians beside the raw WebSockets' at one N; return the ratios."""
    sio, raw = medians[SOCKETIO], medians[app]
    print(f"\nN={n}: Socket.IO on /socket.io/ beside raw WebSockets on /_ws/ (medians)")
    print(f"  {'figure':26} {'Socket.IO':>10} {'raw':>10} {'ratio':>7}")
    ratios: Result = {}
    for m in METRICS:
        r = ratios[m.label] = ratio(sio[m.label], raw[m.label])
        better = "" if r is None else ("  better" if (r >= 1) == m.higher_is_better else "  worse")
        print(f"  {m.label:26} {fmt(sio[m.label]):>10} {fmt(raw[m.label]):>10} {fmt(r):>7}{better}")
    return ratios


def channels_summary(n: int, results: dict[str, list[Result]]) -> Result:
    """Medians of the channel layouts, printed, with the ratio to the default stream."""
    burst_rate = _field("burst", "deliveriesPerSec")
    figures = {
        "deliveries/s": burst_rate,
        "broadcasts/s": _broadcasts_per_second,
        "p99 ms (paced)": _field("paced", "latP99ms"),
        "CPU us/delivery": _field("burst", "serverCpuUsPerDelivery"),
    }
    summary: Result = {}
    print(f"\nChannels: {n} clients (medians of {len(next(iter(results.values())))})")
    print(f"  {'layout':34} " + " ".join(f"{label:>16}" for label in figures) + "  vs default")
    base = median([burst_rate(r) for r in results["0"]]) if "0" in results else None
    for k, runs in results.items():
        layout = "default stream" if k == "0" else f"{k} channels of {n // int(k)}"
        medians = {label: median([read(r) for r in runs]) for label, read in figures.items()}
        medians["vs default"] = ratio(medians["deliveries/s"], base)
        complete = all(_field("burst", "complete")(r) for r in runs)
        summary[layout] = {**medians, "complete": complete}
        cells = " ".join(f"{fmt(medians[label]):>16}" for label in figures)
        flag = "" if complete else "  INCOMPLETE"
        print(f"  {layout:34} {cells}  {fmt(medians['vs default']):>10}{flag}")
    return summary


def _broadcasts_per_second(result: Result) -> float | None:
    """Broadcasts the burst made per second: deliveries/s over clients per broadcast."""
    rate = _field("burst", "deliveriesPerSec")(result)
    channels = result.get("cfg", {}).get("channels", 0)
    reach = result.get("connected", 0) / channels if channels else result.get("connected", 0)
    return rate / reach if rate and reach else None


def slow_summary(results: dict[str, dict[str, list[Result]]]) -> Result:
    """Medians of the slow-client runs per server, printed."""
    summary: Result = {}
    print("\nOne client that never reads (burst; the other clients' figures):")
    for name, runs in results.items():
        figures: Result = {}
        for variant, variant_runs in runs.items():
            growth = [_growth(r) for r in variant_runs]
            figures[variant] = {
                "deliveries/s": median(
                    [_field("burst", "deliveriesPerSec")(r) for r in variant_runs]
                ),
                "p99 ms": median([_field("burst", "latP99ms")(r) for r in variant_runs]),
                "memory growth KB": median(growth),
                "complete": all(_field("burst", "complete")(r) for r in variant_runs),
            }
        slow = [r.get("slowClient", {}) for r in runs["with_slow"]]
        figures["slow client cut off"] = [bool(s.get("closed_by_server")) for s in slow]
        figures["p99 change"] = ratio(figures["with_slow"]["p99 ms"], figures["alone"]["p99 ms"])
        extra = [
            (w or 0) - (a or 0)
            for w, a in zip(
                [_growth(r) for r in runs["with_slow"]],
                [_growth(r) for r in runs["alone"]],
                strict=True,
            )
        ]
        figures["extra memory KB"] = median(extra)
        alone_growth = [g for g in (_growth(r) for r in runs["alone"]) if g is not None]
        # RSS moves in pages and allocator arenas: the spread without the slow client is the noise.
        figures["noise KB"] = max(alone_growth) - min(alone_growth) if alone_growth else None
        summary[name] = figures
        alone, with_slow = figures["alone"], figures["with_slow"]
        print(
            f"  {name:8} deliveries/s {fmt(alone['deliveries/s'])} ->"
            f" {fmt(with_slow['deliveries/s'])}"
            f", p99 {fmt(alone['p99 ms'])} -> {fmt(with_slow['p99 ms'])} ms"
            f" (x{fmt(figures['p99 change'])}), all delivered: {with_slow['complete']}"
            f", RSS growth in the burst {fmt(alone['memory growth KB'])} ->"
            f" {fmt(with_slow['memory growth KB'])} KB (extra {fmt(figures['extra memory KB'])} KB)"
            f", noise {fmt(figures['noise KB'])} KB"
            f", slow client cut off: {figures['slow client cut off']}"
        )
    return summary


def wave_summary(label: str, results: dict[str, list[Result]]) -> Result:
    """Medians of the reconnect-wave runs per server, printed."""
    summary: Result = {}
    print(f"\nReconnect wave, {label}:")
    for name, runs in results.items():
        outcomes: dict[str, int] = {}
        for r in runs:
            for outcome, count in r["outcome"].items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
        s: Result = {
            "wave s": median([r["wave_seconds"] for r in runs]),
            "replay max s": median([r["replay_max_s"] for r in runs]),
            "live max silence ms": median([r["live_max_silence_ms"] for r in runs]),
            "health p99 ms": median([r["health"]["p99"] for r in runs]),
            "health max ms": median([r["health"]["max"] for r in runs]),
            "health errors": sum(sum(r["health"]["errors"].values()) for r in runs),
            "CPU ms/replay": median([r["cpu_per_replay_ms"] for r in runs]),
            "outcomes": outcomes,
        }
        summary[name] = s
        print(
            f"  {name:8} wave {fmt(s['wave s'])} s (slowest replay {fmt(s['replay max s'])} s),"
            f" live clients' longest silence {fmt(s['live max silence ms'])} ms,"
            f" health p99 {fmt(s['health p99 ms'])} ms (max {fmt(s['health max ms'])},"
            f" {s['health errors']} errors), server CPU {fmt(s['CPU ms/replay'])} ms per replay,"
            f" {outcomes}"
        )
    return summary


def deploy_summary(n: int, results: dict[str, list[Result]]) -> Result:
    """Medians of the simulated deploys per drain, printed."""
    summary: Result = {}
    print(f"\nA deploy: {n} clients move from the old process to the new one")
    for label, runs in results.items():
        s: Result = {
            "reconnected": min(r["reconnected"] for r in runs),
            "peak per 100 ms": median([r["peak_per_100ms"] for r in runs]),
            "spread s": median(
                [r["last_s"] - r["first_s"] for r in runs if r["first_s"] is not None]
            ),
            "old exit s": median([r["old_exit_s"] for r in runs]),
            "health p99 ms": median([r["health"]["p99"] for r in runs]),
            "health max ms": median([r["health"]["max"] for r in runs]),
        }
        summary[label] = s
        print(
            f"  {label:12} {s['reconnected']}/{n} reconnected, spread over {fmt(s['spread s'])} s,"
            f" peak {fmt(s['peak per 100 ms'])} per 100 ms, old process exited after"
            f" {fmt(s['old exit s'])} s, new process's health p99 {fmt(s['health p99 ms'])} ms"
            f" (max {fmt(s['health max ms'])})"
        )
    return summary


def _growth(result: Result) -> float | None:
    burst = _phase(result, "burst")
    if burst is None:
        return None
    # The shared kit's client.js has no rssBeforeKb: the RSS after connecting is its equivalent.
    before = burst["rssBeforeKb"] if "rssBeforeKb" in burst else result["rss1Kb"]
    return float(burst["peakRssKb"]) - float(before)


def capacity_summary(results: dict[str, list[Result]]) -> Result:
    """Per server, the most clients a step held, and each step's p95; printed."""
    print(
        f"\nCapacity: clients served while the p95 latency of {CAPACITY_BROADCASTS_PER_S} "
        f"broadcasts/s to all, and the last one's lateness, stay under {CAPACITY_P95_MS:.0f} ms"
    )
    summary: Result = {}
    for name, steps in results.items():
        held = [r["cfg"]["n"] for r in steps if within_capacity(r)]
        p95s = {r["cfg"]["n"]: _field("paced", "latP95ms")(r) for r in steps}
        late = {r["cfg"]["n"]: lateness_ms(r) for r in steps}
        summary[name] = {
            "clients": max(held, default=0),
            "p95 ms by clients": p95s,
            "last broadcast late ms by clients": late,
        }
        ladder = ", ".join(f"{n:,}: {fmt(p95s[n])}/{fmt(late[n])} ms" for n in p95s)
        top = "" if len(held) < len(CAPACITY_STEPS) else " (the top step)"
        print(f"  {name:10} {max(held, default=0):>7,}{top}   p95/last late: {ladder}")
    return summary


def idle_summary(n: int, results: dict[str, list[Result]]) -> Result:
    """Medians of the idle-connection runs per server, printed."""
    summary: Result = {}
    print(f"\n{n} idle connections:")
    for name, runs in results.items():
        summary[name] = {
            "connected": min(r["connected"] for r in runs),
            "open at end": min(r["openAtEnd"] for r in runs),
            "RSS KB/connection": median([r["rssPerConnKb"] for r in runs]),
            "connections/s": median([r["connectPerSec"] for r in runs]),
        }
        s = summary[name]
        print(
            f"  {name:8} connected {s['connected']}, still open after the hold {s['open at end']}, "
            f"{fmt(s['RSS KB/connection'])} KB/connection, {fmt(s['connections/s'])} connections/s"
        )
    return summary


def goals(report: Result, app: str) -> list[tuple[str, str, bool | None]]:
    """The issues' goals: (goal, measured, met); met is None when it was not measured."""
    rows: list[tuple[str, str, bool | None]] = []

    def at_least(goal: str, value: float | None, bound: float, unit: str = "x") -> None:
        rows.append((goal, f"{fmt(value)}{unit}", None if value is None else value >= bound))

    def at_most(goal: str, value: float | None, bound: float, unit: str) -> None:
        rows.append((goal, f"{fmt(value)}{unit}", None if value is None else value <= bound))

    fan = report.get("fan_out", {})
    for n in (1000, 5000):
        m = fan.get(str(n), {})
        ours = m.get(app, {})
        for peer, bound in ((NODE, 1.3), (WEBSOCKETS, 1.1)):
            theirs = m.get(peer, {})
            r = ratio(ours.get("deliveries/s (burst)"), theirs.get("deliveries/s (burst)"))
            at_least(f"deliveries/s >= {bound}x {peer}, N={n}", r, bound)
        at_most(
            f"health p99 <= 50 ms during the N={n} burst",
            ours.get("health p99 ms (burst)"),
            50,
            " ms",
        )
    m = fan.get("5000", {})
    accept = ratio(m.get(app, {}).get("connections/s"), m.get(NODE, {}).get("connections/s"))
    at_least(f"connections/s >= {NODE}'s, N=5000", accept, 1.0)
    idle = report.get("idle", {}).get(app)
    if idle:
        at_most("<= 10 KB RSS per idle connection", idle["RSS KB/connection"], 10, " KB")
        held = idle["open at end"]
        rows.append(
            (f"{report['idle_n']:,} connections held", f"{held:,}", held >= report["idle_n"])
        )
    capacity = report.get("capacity", {})
    if app in capacity:
        for peer in (NODE, WEBSOCKETS):
            if peer in capacity:
                ours, theirs = capacity[app]["clients"], capacity[peer]["clients"]
                rows.append((f"capacity >= {peer}'s", f"{ours:,} / {theirs:,}", ours >= theirs))
    slow = report.get("slow", {}).get(app)
    if slow:
        change = slow["p99 change"]
        rows.append(
            (
                "slow client: others' p99 within 10%",
                f"x{fmt(change)}",
                change is not None and change <= 1.1,
            )
        )
        extra, limit_kb = slow["extra memory KB"], report["slow_limit"] / 1024
        bound = limit_kb + (slow["noise KB"] or 0)
        rows.append(
            (
                f"slow client: memory growth <= limit ({limit_kb:.0f} KB) + noise",
                f"{fmt(extra)} KB",
                extra is not None and extra <= bound,
            )
        )
    for label, waves in report.get("waves", {}).items():
        w = waves.get(app)
        if not w:
            continue
        h, s, d = w["health p99 ms"], w["live max silence ms"], w["wave s"]
        rows.append((f"wave ({label}): health p99 < 100 ms", f"{fmt(h)} ms", h < 100))
        rows.append((f"wave ({label}): live silence < 1 s", f"{fmt(s)} ms", s < 1000))
        rows.append((f"wave ({label}): served within 5 s", f"{fmt(d)} s", d <= 5 + 0.5))
    renders = report.get("renders")
    if renders:
        rows.append(("copier copy < 1.5 s", f"{renders['copy_s']:.2f} s", renders["copy_s"] < 1.5))
        rows.append(
            ("copier update < 3 s", f"{renders['update_s']:.2f} s", renders["update_s"] < 3)
        )
    print("\nGoals:")
    for goal, measured, met in rows:
        verdict = "not measured" if met is None else ("met" if met else "NOT MET")
        print(f"  {goal:48} {measured:>12}  {verdict}")
    return rows


def machine(python: Path, node_dir: Path | None, peer_python: Path | None) -> Result:
    """Machine and versions, for the record."""
    info: Result = {
        "nproc": os.cpu_count(),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "kernel": platform.release(),
        "python": run(
            [str(python), "-c", "import platform; print(platform.python_version())"]
        ).strip(),
        **package_versions(python, "aiohttp", "uvloop"),
        "copier": run([sys.executable, "-m", "copier", "--version"]).split()[-1],
    }
    if peer_python is not None:
        info.update(package_versions(peer_python, "websockets"))
    if node_dir is not None:
        info["node"] = run(["node", "--version"]).strip()
        info["ws"] = json.loads((node_dir / "node_modules" / "ws" / "package.json").read_text())[
            "version"
        ]
    return info


def package_versions(python: Path, *names: str) -> Result:
    """The versions of the distributions ``names`` in ``python``'s environment."""
    code = f"from importlib.metadata import version; print(*map(version, {names!r}))"
    return dict(zip(names, run([str(python), "-c", code]).split(), strict=True))


def wait_for_quiet(max_seconds: float, threshold: float) -> None:
    """Wait until the 1-minute load average is below ``threshold`` (at most ``max_seconds``)."""
    deadline = time.monotonic() + max_seconds
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        log(f"load average {os.getloadavg()[0]:.2f}, waiting for < {threshold}")
        time.sleep(15)


def raise_open_files(needed: int) -> None:
    """Raise the soft limit of open files (inherited by the servers and the load generator)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, min(hard, needed)) if hard != resource.RLIM_INFINITY else max(soft, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log(f"open files limited to {target}; the {needed}-connection runs may fail")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--template", type=Path, default=REPO, help="the template repository (default: this one)"
    )
    parser.add_argument("--ns", type=int, nargs="+", default=[1000, 5000], help="client counts")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=REPO.parent / "shared" / "bench" / "node-baseline",
        help="the Node baseline's folder (skipped when missing)",
    )
    parser.add_argument(
        "--loadgen",
        type=Path,
        default=HERE / "loadgen.mjs",
        help="load generator (e.g. ../shared/bench/client.js; same config and output)",
    )
    parser.add_argument(
        "--peer",
        type=Path,
        default=REPO.parent / "shared" / "bench" / "python-websockets-peer",
        help="the python-websockets peer's folder, with its server.py (skipped when missing)",
    )
    parser.add_argument(
        "--no-capacity", action="store_true", help="skip the capacity ladder (the longest run)"
    )
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections (0: skip)")
    parser.add_argument(
        "--wave", type=int, default=2000, help="clients in the reconnect wave (0: skip)"
    )
    parser.add_argument(
        "--wave-back", type=int, default=1000, help="broadcasts each wave client missed"
    )
    parser.add_argument(
        "--deploy", type=int, default=2000, help="clients in the simulated deploy (0: skip)"
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="an earlier template checkout (e.g. a git worktree) to measure side by side",
    )
    parser.add_argument(
        "--slow-n", type=int, default=100, help="clients in the slow-client run (0: skip)"
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=5000,
        help="clients of the channel runs: 1000 channels of N/1000, 1 of N (0: skip)",
    )
    parser.add_argument(
        "--slow-burst", type=int, default=10_000, help="broadcasts in the slow-client run"
    )
    parser.add_argument(
        "--slow-limit",
        type=int,
        default=16384,
        help="the app's MAX_CLIENT_BUFFER_BYTES in that run",
    )
    parser.add_argument(
        "--no-socketio",
        action="store_true",
        help="skip the Socket.IO fan-out (the app rendered with socketio_server, at each N)",
    )
    parser.add_argument("--no-render-timing", action="store_true")
    parser.add_argument(
        "--wait-quiet", type=float, default=0, help="seconds to wait for load < 0.5"
    )
    parser.add_argument("--json", type=Path, help="also write every run's raw results here")
    return parser.parse_args()


def main() -> None:
    """Render, install, benchmark and report."""
    args = parse_args()
    raise_open_files(max([*args.ns, args.idle, *CAPACITY_STEPS]) + 1000)
    report: Result = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    with tempfile.TemporaryDirectory(prefix="vip-bench-") as tmp:
        work = Path(tmp)
        settings = work / "copier-settings.yml"
        settings.write_text("defaults: {}\n")
        os.environ["COPIER_SETTINGS_PATH"] = str(settings)  # the user's copier defaults stay out
        # The template files vip-skeleton itself imports, as they are in the work tree.
        snapshot = work / "template"
        import_snapshot(args.template, "v1", snapshot)
        project = render(snapshot, work / "project")
        package = package_of(project)
        python = ensure_venv(project_requirements(project))
        app = Server(
            "python",
            [str(python), "-m", package],
            project,
            {"PYTHONPATH": str(project / "src"), **UNLIMITED_ADMISSION},
            replays=True,
        )
        servers = [app]
        if args.before:
            import_snapshot(args.before, "v1", work / "before")
            earlier = render(work / "before", work / "before-app")
            servers.append(
                Server(
                    BEFORE,
                    [str(ensure_venv(project_requirements(earlier))), "-m", package_of(earlier)],
                    earlier,
                    {"PYTHONPATH": str(earlier / "src"), **UNLIMITED_ADMISSION},
                    replays=True,
                )
            )
        peer_python = None
        if (args.peer / "server.py").is_file():
            peer_python = ensure_venv(PEER_REQUIREMENTS)
            argv = [str(peer_python), "server.py"]
            # broadcast() to every client at once, as the library documents it.
            servers.append(Server(WEBSOCKETS, argv, args.peer, {"UVLOOP": "1"}))
        else:
            log(f"no python-websockets peer at {args.peer}: skipped")
        node_dir = None
        if args.baseline.is_dir() and shutil.which("node"):
            node_dir = ensure_node_baseline(args.baseline)
            servers.append(Server(NODE, ["node", "server.js"], node_dir))
        else:
            log(f"no Node baseline at {args.baseline}: no ratios to Node")
        report["machine"] = machine(python, node_dir, peer_python)
        socketio = None
        if not args.no_socketio and args.loadgen.resolve() != HERE / "loadgen.mjs":
            log(f"{args.loadgen} speaks no Socket.IO: no Socket.IO runs")
        elif not args.no_socketio:
            # A second render, so that every other figure stays the default answers' app. Its raw
            # /_ws/ runs the same code as the default app's (hub.py and the raw endpoint do not
            # depend on the answer), so the default app's runs are the raw column.
            sio_project = render(snapshot, work / "socketio-project", socketio_server=True)
            sio_python = ensure_venv(project_requirements(sio_project))
            socketio = Server(
                SOCKETIO,
                [str(sio_python), "-m", package_of(sio_project)],
                sio_project,
                {"PYTHONPATH": str(sio_project / "src"), **UNLIMITED_ADMISSION},
                loadgen={"socketio": True},
            )
            report["machine"].update(
                package_versions(sio_python, "python-socketio", "python-engineio")
            )
        wait_for_quiet(args.wait_quiet, 0.5)
        report["load_before"] = os.getloadavg()
        if not args.no_render_timing:
            log("timing copier copy and copier update")
            report["renders"] = time_renders(snapshot, work / "renders", args.repetitions)
        bench = Bench(servers, args.loadgen, work, args.repetitions, socketio=socketio)
        raw: Result = {}
        report["fan_out"] = {}
        for n in args.ns:
            raw[f"fan_out_{n}"] = results = bench.fan_out(n)
            report["fan_out"][str(n)] = medians = fan_out_table(n, results, app.name)
            if socketio:
                report.setdefault("socketio", {})[str(n)] = socketio_table(n, medians, app.name)
        if args.channels:
            layouts = (0, 1000, 1)
            raw["channels"] = results = bench.channels(args.channels, layouts)
            report["channels"] = channels_summary(args.channels, results)
        if not args.no_capacity:
            raw["capacity"] = results = bench.capacity(CAPACITY_STEPS)
            report["capacity"] = capacity_summary(results)
        if args.slow_n:
            raw["slow"] = bench.slow_client(args.slow_n, args.slow_burst, args.slow_limit)
            report["slow_limit"] = args.slow_limit
            report["slow"] = slow_summary(raw["slow"])
        if args.wave:
            report["waves"] = {}
            # All at once (the worst case), and spread as the shipped clients' first reconnect
            # delay spreads a deploy's wave (a random 0-5 s).
            for label, spread in (("all at once", 0), ("spread over 5 s", 5)):
                config = {"wave": args.wave, "back": args.wave_back, "spread_s": spread}
                raw[f"wave {label}"] = results = bench.wave(config)
                report["waves"][label] = wave_summary(
                    f"{args.wave} clients {label}, {args.wave_back} broadcasts back", results
                )
        if args.deploy:
            raw["deploy"] = results = bench.deploy(args.deploy, drains=(0, 4))
            report["deploy"] = deploy_summary(args.deploy, results)
        if args.idle:
            raw["idle"] = bench.idle(args.idle, hold=5)
            report["idle_n"] = args.idle
            report["idle"] = idle_summary(args.idle, raw["idle"])
        report["load_after"] = os.getloadavg()
        if "renders" in report:
            r = report["renders"]
            print(
                f"\ncopier copy {r['copy_s']:.2f} s,"
                f" copier update v1 -> v2 {r['update_s']:.2f} s (medians)"
            )
        report["goals"] = goals(report, app.name)
        print(f"\nmachine: {json.dumps(report['machine'])}")
        print(f"load average before/after: {report['load_before']} / {report['load_after']}")
        if args.json:
            args.json.write_text(json.dumps({"report": report, "raw": raw}, indent=1))


if __name__ == "__main__":
    main()
