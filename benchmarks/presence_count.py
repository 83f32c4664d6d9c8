"""Counted presence across two processes on one Redis: how soon every subscriber of a large room
sees a change, and how much presence traffic each gets (issue 27).

Renders the template (with Redis) at HEAD, starts a ``redis-server`` of its own (server-side
scripting renamed away, so any use of it fails) and two app processes on it, then runs
``presence_count.mjs`` for each room size: N raw WebSocket subscribers of one counted channel
(``live/bench``), spread over both processes. Prints one JSON object per size, then the ratio of
per-subscriber traffic between the largest and the smallest room (bounded: about 1).

Usage: python benchmarks/presence_count.py [--sizes 1000 10000] [--python PATH]
(``--python``: an interpreter with the app's dependencies; default: this one.)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCRIPTS = ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "SCRIPT", "FCALL", "FCALL_RO", "FUNCTION")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come within {seconds:.0f} s")


def healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/cache-healthcheck?")
        return connection.getresponse().status == 200
    finally:
        connection.close()


@contextlib.contextmanager
def running(argv: list[str], **popen: object) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, **popen)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--churn-seconds", type=int, default=10)
    args = parser.parse_args()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        sys.exit("redis-server is needed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="presence-count-") as work:
        project = Path(work) / "app"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "copier",
                "copy",
                "--defaults",
                "--trust",
                "--vcs-ref",
                "HEAD",
                "--data",
                "redis=true",
                "--data",
                "project_name=bench-app",
                str(REPO),
                str(project),
            ],
            check=True,
            capture_output=True,
        )
        redis_port = free_port()
        renamed = [arg for command in SCRIPTS for arg in ("--rename-command", command, "")]
        with running(
            [
                redis_server,
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *renamed,
            ],
            stdout=subprocess.DEVNULL,
        ):
            time.sleep(0.5)
            ports = [free_port(), free_port()]
            env = {
                **os.environ,
                "PYTHONPATH": str(project / "src"),
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "BENCH": "1",  # no demo producer: the room's own traffic only
                "MAX_CONNECTS_PER_SECOND": "100000",
                "HEARTBEAT_SECONDS": "30",
                "LOG_LEVEL": "WARNING",
            }
            with contextlib.ExitStack() as stack:
                pids = []
                for port in ports:
                    app = stack.enter_context(
                        running(
                            [args.python, "-m", "bench_app"],
                            cwd=project,
                            env={**env, "PORT": str(port)},
                        )
                    )
                    pids.append(app.pid)
                for port in ports:
                    wait_until(lambda port=port: healthy(port), 20, f"the app on {port}")
                results = []
                for size in args.sizes:
                    config = {"ports": ports, "n": size, "churnSecs": args.churn_seconds}
                    out = subprocess.run(
                        ["node", str(HERE / "presence_count.mjs"), json.dumps(config)],
                        check=True,
                        capture_output=True,
                        text=True,
                        timeout=900,
                    )
                    result = json.loads(out.stdout)
                    print(json.dumps(result), flush=True)
                    results.append(result)
    small, large = results[0], results[-1]
    per_subscriber = [r["countBytesPerSubscriberPerS"] for r in (small, large)]
    print(
        json.dumps(
            {
                "sizes": [small["n"], large["n"]],
                "count_bytes_per_subscriber_ratio": per_subscriber[1] / per_subscriber[0]
                if per_subscriber[0]
                else None,
                "largest_room_every_subscriber_right_within_ms": {
                    "leave": large["afterLeaveMs"],
                    "join": large["afterJoinMs"],
                },
            }
        )
    )


if __name__ == "__main__":
    main()
