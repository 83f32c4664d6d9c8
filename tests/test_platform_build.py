"""The platform's own Node.js build path (issue 5): package.json + scripts/vip-build.py.

The platform ignores the project's Dockerfile: in the official ``node:<major>`` image it runs
``npm install --production``, ``npm run build`` and ``npm start``. These tests run exactly that:

- natively here, with a python3 that has pip, one that has none (a ``venv --without-pip``), and
  the plain-directory layout for a python3 without the venv module; then ``npm start`` with a
  random PORT: health check 200, integers on a WebSocket, SIGTERM to npm closes it with 1012;
- in a podman stand-in for the node image (Debian with Node.js and python3 only: no pip, no venv
  package), built with a copy of the platform checker's own Dockerfile (marker ``container``);
- the platform's preflight checker (npm ``@automattic/vip-go-preflight-checks``) on a freshly
  generated project, with a stand-in ``docker`` that starts it with ``npm start`` (no Docker).

Needs ``npm`` (skips without it); the podman test needs podman and the stand-in image
(``tests/platform/make-node-image.sh``, ~90 s once; the test makes it when missing).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import http.client
import http.server
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from rendering import git, render
from servers import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
PLATFORM = REPO_ROOT / "tests" / "platform"
ANSWERS: dict[str, Any] = {"project_name": "Platform Check"}
PACKAGE = "platform_check"
#: The Node.js majors the platform's checker accepts (ALLOWED_NODEJS_VERSIONS is 18, 20, 22); 18 is
#: past its end of life, so engines.node names 20 and 22.
NODE_MAJORS = ("20", "22")
#: What the checker's build writes into the build context (its build.sh), replacing ours.
CHECKER_DOCKERIGNORE = ".dockerignore\n.git\n.npm\nDockerfile\nbuild.sh\nnode_modules\n"
NPM = shutil.which("npm")
needs_npm = pytest.mark.skipif(NPM is None, reason="npm is not installed (apt-get install npm)")


# ---------------------------------------------------------------------------------------------
# Helpers


def _run(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _health(port: int) -> int:
    """Status of a raw ``GET /cache-healthcheck?`` (the literal ``?`` goes out as it is)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/cache-healthcheck?")
        return conn.getresponse().status
    finally:
        conn.close()


def _wait_healthy(port: int, alive: Any, timeout: float = 30) -> float:
    """Wait for a 200 from the health check; ``alive()`` returning a message fails the test."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(OSError):
            if _health(port) == 200:
                return time.monotonic() - started
        problem = alive()
        if problem:
            pytest.fail(problem)
        if time.monotonic() - started > timeout:
            pytest.fail(f"no 200 from /cache-healthcheck? on port {port} within {timeout} s")
        time.sleep(0.1)


def _integers(ws: ClientConnection, count: int = 3) -> list[int]:
    """The next ``count`` integers broadcast on ``ws``: ``{"id": n, "data": <int>}`` frames."""
    values: list[int] = []
    ids: list[int] = []
    deadline = time.monotonic() + 15
    while len(values) < count:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if frame.get("type") == "heartbeat":
            continue
        assert isinstance(frame["id"], int), frame
        assert isinstance(frame["data"], int), frame
        ids.append(frame["id"])
        values.append(frame["data"])
    assert ids == sorted(ids), f"ids must increase: {ids}"
    return values


def _close_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Read until the server closes ``ws``; return the close code it sent."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ConnectionClosed):
        while time.monotonic() < deadline:
            ws.recv(timeout=deadline - time.monotonic())
    return ws.close_code


def _npm(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    assert NPM is not None
    proc = _run([NPM, *args], cwd=project, env=env, timeout=600)
    assert proc.returncode == 0, f"npm {' '.join(args)} failed:\n{_tail(proc.stdout + proc.stderr)}"
    return proc.stdout + proc.stderr


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _generate(template_snapshot: Path, dest: Path, **answers: Any) -> Path:
    """A freshly generated project, committed to a new git repository (as it would be pushed)."""
    project = render(template_snapshot, dest, **{**ANSWERS, **answers})
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "generated by vip-skeleton")
    return project


def _platform_build(project: Path, env: dict[str, str] | None = None) -> tuple[str, float]:
    """``npm install --production && npm run build``, as the platform runs them; output, seconds."""
    started = time.monotonic()
    out = _npm(project, "install", "--production", env=env)
    out += _npm(project, "run", "build", env=env)
    return out, time.monotonic() - started


def _start_stop_check(project: Path, env: dict[str, str] | None = None) -> None:
    """``npm start`` with a random PORT: health 200, integers on /_ws/, SIGTERM to npm -> 1012."""
    assert NPM is not None
    port = free_port()
    run_env = {**(env or os.environ), "PORT": str(port), "NODE_ENV": "production"}
    run_env["TICK_SECONDS"] = "0.1"
    log = project.parent / f"{project.name}-npm-start.log"  # outside the checkout
    with log.open("w") as out:
        npm = subprocess.Popen(  # npm itself: it must pass SIGTERM on to the server
            [NPM, "start"], cwd=project, env=run_env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_healthy(
            port, lambda: None if npm.poll() is None else f"npm start exited:\n{log.read_text()}"
        )
        # `exec` in the start script: the server is npm's direct child, no shell in between.
        children = _children(npm.pid)
        assert len(children) == 1, children
        cmdline = Path(f"/proc/{children[0]}/cmdline").read_bytes().split(b"\0")
        assert b"-m" in cmdline, cmdline
        assert PACKAGE.encode() in cmdline, cmdline
        with connect(f"ws://127.0.0.1:{port}/_ws/", open_timeout=10) as ws:
            values = _integers(ws)
            assert values == sorted(values), values
            npm.send_signal(signal.SIGTERM)
            assert _close_code(ws) == 1012, log.read_text()  # the drain: service restart
        assert npm.wait(timeout=10) == 0, log.read_text()
        with pytest.raises(ConnectionRefusedError):
            _health(port)
    finally:
        if npm.poll() is None:
            npm.kill()
            npm.wait()
    text = log.read_text()
    assert f"listening on http://0.0.0.0:{port}" in text, text
    assert "draining 1 WebSocket connections" in text, text


def _python_without_pip(where: Path) -> Path:
    """A directory holding a ``python3`` that has no pip (a ``venv --without-pip``'s)."""
    venv = where / "python-without-pip"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert proc.returncode == 0, proc.stderr
    assert _run([str(venv / "bin" / "python3"), "-c", "import pip"]).returncode != 0
    return venv / "bin"


# ---------------------------------------------------------------------------------------------
# Static checks: what the question adds


def test_package_json_follows_the_platform_rules(template_snapshot: Path, tmp_path: Path) -> None:
    project = render(template_snapshot, tmp_path / "p", **ANSWERS)
    package = json.loads((project / "package.json").read_text(encoding="utf-8"))
    assert package["name"] == "platform-check"
    assert package["private"] is True
    scripts = package["scripts"]
    assert "serve" not in scripts, "the checker warns about a serve script"
    assert scripts["build"] == "python3 scripts/vip-build.py"
    assert scripts["start"] == f"exec .venv/bin/python -m {PACKAGE}", "exec: SIGTERM reaches it"
    assert package["engines"]["node"] == " || ".join(NODE_MAJORS)
    assert not package.get("dependencies")
    assert not package.get("devDependencies")

    # The lock file is what `npm install` writes, so installing leaves the checkout clean.
    lock = json.loads((project / "package-lock.json").read_text(encoding="utf-8"))
    assert lock["name"] == package["name"]
    assert lock["packages"][""]["engines"] == package["engines"]

    ignored = (project / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".venv/" in ignored
    assert "node_modules/" in ignored

    # The build script runs on a bare python3: standard library only.
    script = project / "scripts" / "vip-build.py"
    assert os.access(script, os.X_OK), "the build script keeps its executable bit"
    tree = ast.parse(script.read_text(encoding="utf-8"))
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules
    assert f'PACKAGE = "{PACKAGE}"' in script.read_text(encoding="utf-8")


def test_platform_scripts_are_executable() -> None:
    for name in ("make-node-image.sh", "run-preflight.sh", "docker"):
        script = PLATFORM / name
        assert os.access(script, os.X_OK), f"{script} is not executable"
        assert script.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")


def test_no_bridge_when_declined(template_snapshot: Path, tmp_path: Path) -> None:
    project = render(template_snapshot, tmp_path / "p", vip_node_build=False)
    for name in ("package.json", "package-lock.json", "scripts"):
        assert not (project / name).exists(), name
    answers = (project / ".copier-answers.yml").read_text(encoding="utf-8")
    assert "vip_node_build: false" in answers


def _load_build_script(project: Path) -> Any:
    spec = importlib.util.spec_from_file_location("vip_build", project / "scripts" / "vip-build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["json", "html"])
def test_pip_wheel_comes_from_pip_index_url(
    template_snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    """PIP_INDEX_URL is honoured; PEP 691 JSON or PEP 503 HTML; relative URLs; sha256 checked."""
    project = render(template_snapshot, tmp_path / "p", **ANSWERS)
    build = _load_build_script(project)
    wheel_bytes = b"not really a wheel"
    name = f"pip-{build.PIP_VERSION}-py3-none-any.whl"
    requests: list[tuple[str, str]] = []

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append((self.path, self.headers.get("Accept", "")))
            if self.path == "/simple/pip/":
                if page == "json":
                    files = [{"filename": name, "url": f"../../files/{name}", "hashes": {}}]
                    body = json.dumps({"meta": {"api-version": "1.0"}, "files": files}).encode()
                    kind = "application/vnd.pypi.simple.v1+json"
                else:
                    body = f'<html><body><a href="../../files/{name}#sha256=x">{name}</a>'.encode()
                    kind = "text/html"
            elif self.path == f"/files/{name}":
                body, kind = wheel_bytes, "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_port}/simple")
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("NO_PROXY", "*")
        # The real wheel's hash does not match: the download is refused.
        with pytest.raises(SystemExit):
            build.fetch_pip_wheel(tmp_path / "cache")
        assert not (tmp_path / "cache" / name).exists()
        monkeypatch.setattr(build, "PIP_SHA256", hashlib.sha256(wheel_bytes).hexdigest())
        wheel = build.fetch_pip_wheel(tmp_path / "cache")
        assert wheel == tmp_path / "cache" / name
        assert wheel.read_bytes() == wheel_bytes
        count = len(requests)
        assert build.fetch_pip_wheel(tmp_path / "cache") == wheel  # cached: no new request
        assert len(requests) == count
    finally:
        server.shutdown()
        server.server_close()
    assert requests[0][0] == "/simple/pip/"
    assert "application/vnd.pypi.simple.v1+json" in requests[0][1]


# ---------------------------------------------------------------------------------------------
# Native: the same npm commands as the platform, here


@pytest.fixture(scope="module")
def built_project(template_snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated, committed project after ``npm install --production && npm run build``."""
    if NPM is None:
        pytest.skip("npm is not installed (apt-get install npm)")
    project = _generate(template_snapshot, tmp_path_factory.mktemp("platform") / "project")
    out, seconds = _platform_build(project)
    print(f"\nnative platform build (python3 with pip): {seconds:.1f} s")
    assert "installing the app with this python3's own pip" in out, out
    return project


@needs_npm
def test_build_with_pip_then_npm_start(built_project: Path) -> None:
    project = built_project
    # Nothing for git: the lock file matches, .venv is ignored.
    assert git(project, "status", "--porcelain") == ""
    # Runtime dependencies only.
    python = project / ".venv" / "bin" / "python"
    assert _run([str(python), "-c", "import aiohttp, " + PACKAGE]).returncode == 0
    assert _run([str(python), "-c", "import pytest"]).returncode != 0, "test extras installed"
    # A rebuild with nothing changed is a quick no-op.
    started = time.monotonic()
    out = _npm(project, "run", "build")
    assert "up to date" in out, out
    assert time.monotonic() - started < 10
    _start_stop_check(project)


@needs_npm
def test_build_without_pip(template_snapshot: Path, tmp_path: Path) -> None:
    """python3 without pip (like the platform's image): pip's wheel comes from the index."""
    project = _generate(template_snapshot, tmp_path / "project")
    env = {**os.environ, "PATH": f"{_python_without_pip(tmp_path)}{os.pathsep}{os.environ['PATH']}"}
    out, seconds = _platform_build(project, env)
    print(f"\nnative platform build (python3 without pip): {seconds:.1f} s")
    assert "no pip in this python3: fetching pip" in out, out
    assert "run as a program" in out, out
    assert (project / ".venv" / "pyvenv.cfg").is_file()
    assert git(project, "status", "--porcelain") == ""
    _start_stop_check(project, env)


@needs_npm
def test_build_without_the_venv_module(template_snapshot: Path, tmp_path: Path) -> None:
    """The plain-directory layout (python3 without venv): the same ``npm start`` works."""
    project = _generate(template_snapshot, tmp_path / "project")
    env = {
        **os.environ,
        "PATH": f"{_python_without_pip(tmp_path)}{os.pathsep}{os.environ['PATH']}",
        "VIP_BUILD_MODE": "target",
    }
    _platform_build(project, env)
    assert (project / ".venv" / "site-packages" / PACKAGE).is_dir()
    assert not (project / ".venv" / "pyvenv.cfg").exists()
    wrapper = (project / ".venv" / "bin" / "python").read_text(encoding="utf-8")
    assert wrapper.startswith("#!/bin/sh\n")
    assert '\nexec "' in wrapper or "\nexec /" in wrapper, "exec: signals reach python"
    _start_stop_check(project, env)


# ---------------------------------------------------------------------------------------------
# The platform's preflight checker


@needs_npm
@pytest.mark.parametrize("node_major", NODE_MAJORS)
def test_platform_preflight_checker_passes(
    built_project: Path, tmp_path: Path, node_major: str
) -> None:
    """The checker's npm, git, Docker run + health check and application-health suites."""
    results_file = tmp_path / "preflight.json"
    proc = _run(
        [str(PLATFORM / "run-preflight.sh"), str(built_project), str(results_file), node_major],
        timeout=420,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode == 3:
        pytest.skip(f"the preflight checker could not be fetched from npm: {_tail(output, 5)}")
    print("\n" + _tail(output, 60))
    assert results_file.is_file(), output
    results = json.loads(results_file.read_text(encoding="utf-8"))
    suites = {suite["name"]: suite for suite in results["results"]}
    for name in ("NPM `package.json`", "Git", "Docker", "Application health"):
        assert name in suites, f"suite {name} did not run: {sorted(suites)}"
        assert suites[name]["result"] == "Success", json.dumps(suites[name], indent=1)
    tests = {test["name"]: test for suite in suites.values() for test in suite["tests"]}
    static_urls = "Testing availability and response time for static URLs"
    for name in ("NPM `scripts`", "NPM `engine`", "Git disallowed files", "Docker run",
                 "Health check", static_urls):  # fmt: skip
        assert tests[name]["result"] == "Success", json.dumps(tests[name], indent=1)
    problems = [
        f"{test['name']}: {issue['type']}: {issue['message']}"
        for test in tests.values()
        for issue in test["issues"]
        if issue["type"] not in ("Notice", "Info")
    ]
    assert not problems, "\n".join(problems)
    counts = results["summary"]["results"]
    assert set(counts) <= {"Success", "Skipped"}, counts
    assert proc.returncode == 0, output


# ---------------------------------------------------------------------------------------------
# podman: a stand-in for the platform's node image (python3, no pip, no venv package)


def _podman_unavailable(reason: str) -> NoReturn:
    message = f"{reason} (tests/container/ci-setup.sh sets podman up)"
    if os.environ.get("VIP_SKELETON_REQUIRE_CONTAINER") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def node_image() -> str:
    """The stand-in node image's tag, made (once, ~90 s) when missing."""
    podman = shutil.which("podman")
    if podman is None:
        _podman_unavailable("podman is not installed")
    try:
        made = _run(["bash", str(PLATFORM / "make-node-image.sh")], timeout=900)
    except subprocess.TimeoutExpired:
        _podman_unavailable("making the stand-in node image timed out")
    if made.returncode != 0:
        _podman_unavailable(f"no stand-in node image: {_tail(made.stderr, 5)}")
    return made.stdout.strip().splitlines()[-1]


@pytest.mark.container
def test_platform_build_in_node_image_stand_in(
    node_image: str, template_snapshot: Path, tmp_path: Path
) -> None:
    podman = shutil.which("podman")
    assert podman is not None
    project = _generate(template_snapshot, tmp_path / "project")
    # The build context as the platform makes it: the committed tree, its .dockerignore, packages/.
    context = tmp_path / "context"
    git(tmp_path, "clone", "-q", str(project), str(context))
    (context / ".dockerignore").write_text(CHECKER_DOCKERIGNORE, encoding="utf-8")
    (context / "packages").mkdir(exist_ok=True)
    tag = f"localhost/vip-skeleton-platform-test-{uuid.uuid4().hex[:12]}:ci"
    name = f"vip-skeleton-platform-test-{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    build = _run(
        [podman, "build", "--format", "docker", "--pull=never", "--layers=false",
         "--build-arg", f"NODE_IMAGE={node_image}", "-f", str(PLATFORM / "Containerfile"),
         "-t", tag, str(context)],
        timeout=900,
    )  # fmt: skip
    try:
        output = build.stdout + build.stderr
        assert build.returncode == 0, "podman build failed:\n" + _tail(output, 60)
        print(f"\npodman build on the node stand-in: {time.monotonic() - started:.1f} s")
        assert "no pip in this python3: fetching pip" in output, _tail(output)
        port = free_port()
        run = _run(
            [podman, "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",  # noqa: S108
             "--network=host", "-e", f"PORT={port}", "-e", "NODE_ENV=production",
             "-e", "TICK_SECONDS=0.1", "--pull=never", tag],
        )  # fmt: skip
        assert run.returncode == 0, run.stderr

        def alive() -> str | None:
            state = _run([podman, "inspect", "--format", "{{.State.Status}}", name]).stdout.strip()
            if state in ("running", "created", "configured"):
                return None
            logs = _run([podman, "logs", name])
            return f"container {state}:\n{_tail(logs.stdout + logs.stderr)}"

        ready = _wait_healthy(port, alive)
        print(f"ready on port {port} in {ready:.2f} s (read-only root, npm start as PID 1)")
        with connect(f"ws://127.0.0.1:{port}/_ws/", open_timeout=10) as ws:
            _integers(ws)
            stop = _run([podman, "stop", "-t", "10", name], timeout=30)
            assert stop.returncode == 0, stop.stderr
            assert _close_code(ws) == 1012
        exit_code = _run([podman, "inspect", "--format", "{{.State.ExitCode}}", name]).stdout
        logs = _run([podman, "logs", name])
        assert exit_code.strip() == "0", _tail(logs.stdout + logs.stderr)
        assert "draining 1 WebSocket connections" in logs.stdout + logs.stderr
    finally:
        _run([podman, "rm", "-f", "-t", "0", name])
        _run([podman, "rmi", "-f", tag])
