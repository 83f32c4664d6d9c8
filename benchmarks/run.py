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

The modules beside it: ``rendering.py`` (the template rendered, shared with the tests),
``servers.py`` (the servers under test, started and stopped), ``matrix.py`` (each kind of run, the
load), ``report.py`` (medians and ratios, printed) and ``goals.py`` (the goals, as data).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from goals import check
from matrix import CAPACITY_STEPS, WAVES, Bench
from rendering import git, render, user_settings_kept_out
from report import (
    capacity_summary,
    channels_summary,
    deploy_summary,
    fan_out_table,
    idle_summary,
    slow_summary,
    socketio_table,
    wave_summary,
)
from servers import (
    BEFORE,
    NODE,
    NODE_BASELINE,
    PEER_REQUIREMENTS,
    SOCKETIO,
    WEBSOCKETS,
    Result,
    Server,
    app_server,
    ensure_node_baseline,
    ensure_venv,
    log,
    machine,
    package_versions,
    run,
)
from vip_skeleton.source import import_snapshot

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


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
        default=NODE_BASELINE,
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
    with (
        tempfile.TemporaryDirectory(prefix="vip-bench-") as tmp,
        user_settings_kept_out(Path(tmp)),
    ):
        work = Path(tmp)
        # The template files vip-skeleton itself imports, as they are in the work tree.
        snapshot = work / "template"
        import_snapshot(args.template, "v1", snapshot)
        app = app_server("python", render(snapshot, work / "project"), replays=True)
        servers = [app]
        if args.before:
            import_snapshot(args.before, "v1", work / "before")
            earlier = render(work / "before", work / "before-app")
            servers.append(app_server(BEFORE, earlier, replays=True))
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
        report["machine"] = machine(Path(app.argv[0]), node_dir, peer_python)
        socketio = None
        if not args.no_socketio and args.loadgen.resolve() != HERE / "loadgen.mjs":
            log(f"{args.loadgen} speaks no Socket.IO: no Socket.IO runs")
        elif not args.no_socketio:
            # A second render, so that every other figure stays the default answers' app. Its raw
            # /_ws/ runs the same code as the default app's (hub.py and the raw endpoint do not
            # depend on the answer), so the default app's runs are the raw column.
            sio_project = render(snapshot, work / "socketio-project", socketio_server=True)
            socketio = app_server(SOCKETIO, sio_project, loadgen={"socketio": True})
            report["machine"].update(
                package_versions(Path(socketio.argv[0]), "python-socketio", "python-engineio")
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
            for label, spread in WAVES.items():
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
        report["goals"] = check(report, app.name)
        print(f"\nmachine: {json.dumps(report['machine'])}")
        print(f"load average before/after: {report['load_before']} / {report['load_after']}")
        if args.json:
            args.json.write_text(json.dumps({"report": report, "raw": raw}, indent=1))


if __name__ == "__main__":
    main()
