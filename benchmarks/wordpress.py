"""WordPress to readers, through the real path: a real WordPress (PHP CLI, the local MariaDB)
with the generated must-use plugin saves comments; the generated app delivers them to WebSocket
subscribers.

Measures, on the project rendered with default answers from a snapshot of this repository:

- publish-to-delivery: from the moment ``wp_insert_comment`` is called (PHP's clock) to the moment
  each of ``--subscribers`` WebSocket clients of ``comments:<ID>`` has the comment (this process's
  clock; the same machine), p50/p99/max over every delivery (goal: p99 <= 250 ms, 40 times fresher
  than Liveblog's 10-s poll);
- the time a save spends on the app: ``wp_insert_comment``'s duration with the plugin unconfigured
  (the baseline), with the app up (goal: p99 <= 50 ms more), down (connection refused), and hung
  (a listener that accepts and never answers: the first save waits ``REALTIME_TIMEOUT``, later
  ones queue behind it in the outbox without trying).

Needs PHP CLI with mysqli and MariaDB at 127.0.0.1:3306 (root, no password), as the project's
``tests/test_wordpress.py`` does. Run in the virtualenv of the README's ``pip install -e
'.[test]'``:

    python benchmarks/wordpress.py [--subscribers 1000] [--comments 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from run import log, package_of, render

from vip_skeleton import __version__
from vip_skeleton.check import free_port
from vip_skeleton.source import import_snapshot

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-publish-token-0123456789"  # noqa: S105 - a benchmark's token
TIMEOUT = 1.0


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``values``, in milliseconds, rounded."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(ordered[-1], 2),
        "n": len(ordered),
    }


class WordPress:
    """A fresh WordPress with the project's plugin, driven through its tests' drive.php."""

    def __init__(self, project: Path, where: Path) -> None:
        self.plugin = project / "wordpress"
        setup = subprocess.run(
            [
                "bash",
                str(self.plugin / "tests" / "setup-wordpress.sh"),
                str(where),
                str(self.plugin / "mu-plugins"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        self.root = setup.stdout.strip().splitlines()[-1]
        self.database = (where / "db").read_text().strip()

    def drive(self, port: int | None, *args: object) -> Any:
        env = {**os.environ, "REALTIME_TIMEOUT": str(TIMEOUT)}
        env.pop("REALTIME_URL", None)
        if port is not None:
            env |= {"REALTIME_URL": f"http://127.0.0.1:{port}", "PUBLISH_TOKEN": TOKEN}
        done = subprocess.run(
            ["php", str(self.plugin / "tests" / "drive.php"), self.root, *map(str, args)],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line.removeprefix("RESULT "))
        raise RuntimeError(f"drive.php {args}: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def drop(self) -> None:
        subprocess.run(
            ["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE {self.database}"], check=False
        )


def start_app(project: Path, port: int) -> subprocess.Popen[bytes]:
    """The generated app (bench mode: no demo) on ``port``, once its health check answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", package_of(project)],
        cwd=project,
        env={
            **os.environ,
            "PYTHONPATH": str(project / "src"),
            "PORT": str(port),
            "BENCH": "1",
            "PUBLISH_TOKEN": TOKEN,
            "MAX_CONNECTS_PER_SECOND": "100000",
        },
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /cache-healthcheck? HTTP/1.0\r\n\r\n")
                if sock.recv(64).split(b" ")[1:2] == [b"200"]:
                    return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the app did not start")


def stop_app(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)


async def delivery(
    wordpress: WordPress, port: int, post_id: int, subscribers: int, comments: int, gap_ms: int
) -> dict[str, Any]:
    """Publish-to-delivery of ``comments`` comments to ``subscribers`` clients."""
    channel = f"comments:{post_id}"
    received: list[dict[int, float]] = [{} for _ in range(subscribers)]
    # No pool limit: each WebSocket holds one of the session's connections (100 by default).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = []
        for _ in range(subscribers):
            ws = await asyncio.wait_for(
                session.ws_connect(f"ws://127.0.0.1:{port}/_ws/bench", max_msg_size=0), 10
            )
            await ws.send_json({"type": "subscribe", "channel": channel})
            sockets.append(ws)
        for ws in sockets:
            while True:
                frame = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                if frame["type"] == "subscribed":
                    break

        async def read(ws: aiohttp.ClientWebSocketResponse, seen: dict[int, float]) -> None:
            while len(seen) < comments:
                message = await ws.receive()
                frame = json.loads(message.data)
                if frame.get("channel") == channel and "id" in frame:
                    seen[frame["data"]["id"]] = time.time()

        readers = [
            asyncio.create_task(read(ws, seen)) for ws, seen in zip(sockets, received, strict=True)
        ]
        saves = await asyncio.to_thread(
            wordpress.drive, port, "comments", post_id, comments, gap_ms
        )
        await asyncio.wait_for(asyncio.gather(*readers), 60)
        for ws in sockets:
            await ws.close()
    started = dict(zip(saves["ids"], saves["t0"], strict=True))
    latencies = [(at - started[cid]) * 1000 for seen in received for cid, at in seen.items()]
    return {"subscribers": subscribers, "comments": comments, **percentiles(latencies)}


def hung_listener() -> tuple[socket.socket, int]:
    """A socket that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock, sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--comments", type=int, default=200)
    parser.add_argument("--gap-ms", type=int, default=50, help="between two saves")
    parser.add_argument("--saves", type=int, default=100, help="per case of the save timing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wordpress-bench-"))
    snapshot = work / "snapshot"
    import_snapshot(REPO, __version__, snapshot)
    project = render(snapshot, work / "project")
    log("setting up WordPress")
    wordpress = WordPress(project, work / "wordpress")
    report: dict[str, Any] = {"load": os.getloadavg()[0]}
    try:
        port = free_port()
        app = start_app(project, port)
        try:
            post_id = wordpress.drive(port, "insert-post", "Live")["id"]
            log(f"publish-to-delivery: {args.subscribers} subscribers, {args.comments} comments")
            report["delivery"] = asyncio.run(
                delivery(wordpress, port, post_id, args.subscribers, args.comments, args.gap_ms)
            )
            log("saves: baseline and app up")
            baseline = wordpress.drive(None, "comments", post_id, args.saves)["ms"]
            up = wordpress.drive(port, "comments", post_id, args.saves)["ms"]
        finally:
            stop_app(app)
        log("saves: app down")
        down = wordpress.drive(port, "comments", post_id, args.saves)["ms"]
        app = start_app(project, port)
        try:
            wordpress.drive(port, "drain")
        finally:
            stop_app(app)
        log("saves: app hung")
        listener, hung_port = hung_listener()
        with listener:
            hung = wordpress.drive(hung_port, "comments", post_id, args.saves)["ms"]
        report["save"] = {
            "baseline": percentiles(baseline),
            "up": percentiles(up),
            "down": percentiles(down),
            "hung": percentiles(hung),
            "up_p99_over_baseline_ms": round(
                percentiles(up)["p99_ms"] - percentiles(baseline)["p99_ms"], 2
            ),
        }
    finally:
        wordpress.drop()
    delivered = report["delivery"]
    print(
        f"publish-to-delivery, {delivered['subscribers']} subscribers x {delivered['comments']}"
        f" comments: p50 {delivered['p50_ms']} ms, p99 {delivered['p99_ms']} ms"
        f" (goal 250 ms: {250 / delivered['p99_ms']:.1f}x within), max {delivered['max_ms']} ms;"
        f" Liveblog's poll: 10,000 ms ({10_000 / delivered['p99_ms']:.0f}x the p99)"
    )
    for case, figures in report["save"].items():
        if isinstance(figures, dict):
            print(
                f"save ({case}): p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms,"
                f" max {figures['max_ms']} ms"
            )
    print(f"save with the app up: p99 {report['save']['up_p99_over_baseline_ms']} ms over baseline")
    print(f"load average at start: {report['load']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
