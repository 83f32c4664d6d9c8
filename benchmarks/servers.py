"""The servers under test: their environments, starting and stopping them, a free port for each.

``free_port`` serves this repository's tests too. The rest is the fan-out benchmark's
(``run.py``): cached virtualenvs and the Node baseline's ``npm install``, a server pinned to its
core until its health check answers, and the machine's versions for the record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rendering import package_of

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vip-skeleton-bench"
#: The Node baseline's folder in the shared kit beside this repository, the default of the scripts.
NODE_BASELINE = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "node-baseline"
#: The server runs on core 0; the load generator and the health prober on core 1.
PINNED_SERVER, PINNED_CLIENT = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
#: Where servers under test listen: below the kernel's ephemeral ports (32768 and up on Linux), so
#: that no client's end of a connection takes one between its choice and the server's bind, and
#: above every port Chromium refuses to load pages from.
PORTS = range(20_000, 32_768)
#: python-websockets and uvloop for the Python peer, the ranges it was measured with.
PEER_REQUIREMENTS = ["websockets>=17,<18", "uvloop>=0.21,<1"]
#: Admission control off for every build of the app: the bench measures how fast it can accept.
UNLIMITED_ADMISSION = {"MAX_CONNECTS_PER_SECOND": "1000000"}
#: The peers' names: the Node baseline, the reference of every ratio, and the best Python peer.
NODE, WEBSOCKETS = "node", "websockets"
#: The server built from ``--before``, an earlier template, measured side by side with this one.
BEFORE = "before"
#: The app rendered with ``socketio_server`` yes, its clients speaking Socket.IO on /socket.io/.
SOCKETIO = "socketio"

#: A load generator's (or a benchmark script's) JSON result.
Result = dict[str, Any]


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


def free_port() -> int:
    """Return a port of ``PORTS`` that was free on 127.0.0.1 a moment ago.

    Raises:
        RuntimeError: none of 100 ports tried at random was free.
    """
    for port in random.sample(PORTS, 100):
        with contextlib.suppress(OSError), socket.create_server(("127.0.0.1", port)):
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds the report only."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], cwd: Path | None = None, **kwargs: Any) -> str:
    """Run a command to completion and return its stdout."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True, **kwargs)
    return str(done.stdout)


def measured(python: str, script: str, spec: Result, env: dict[str, str] | None = None) -> Result:
    """What ``script --measure <spec>`` prints (one JSON object), run by ``python``: a script
    that measures the app in a process of its own, with the app's interpreter."""
    done = subprocess.run(
        [python, script, "--measure", json.dumps(spec)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    result: Result = json.loads(done.stdout)
    return result


def app_server(name: str, project: Path, **options: Any) -> Server:
    """The rendered ``project``'s app, in a cached virtualenv of its dependencies."""
    python = ensure_venv(project_requirements(project))
    env = {"PYTHONPATH": str(project / "src"), **UNLIMITED_ADMISSION}
    return Server(name, [str(python), "-m", package_of(project)], project, env, **options)


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
def started(
    server: Server,
    port: int,
    extra_env: dict[str, str],
    logs: Path,
    ready: Callable[[int], bool] = healthy,
) -> Iterator[int]:
    """Start ``server`` pinned to the server core; yield its pid once ``ready(port)`` (its
    health check answers, by default); stop it with SIGTERM."""
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
            while not ready(port):
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
