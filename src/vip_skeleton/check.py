"""``vip-skeleton check``: a preflight of the platform's rules against a running app or a project.

Every probe sends real requests: the health check goes out as the literal request target
``/cache-healthcheck?`` through ``http.client`` (``requests`` would strip the ``?``), WebSocket
handshakes go over a raw socket so the exact status is seen, and the shutdown test holds real
``websockets`` clients open while the app receives SIGTERM.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from vip_skeleton.answers import read_answers
from vip_skeleton.errors import CliError

Status = Literal["pass", "warn", "fail", "skip"]

HEALTH_PATH = "/cache-healthcheck?"
HEALTH_SAMPLES = 5
HEALTH_WARN_MS = 100.0
HEALTH_FAIL_MS = 200.0
HOME_WARN_MS = 1000.0
HOME_FAIL_MS = 2000.0
READY_WARN_S = 3.0
#: How long one probe (a request or a WebSocket handshake) waits for an answer: a hung app fails
#: the rule with this reason instead of stalling the check (the slowest rule fails at 2 s).
PROBE_TIMEOUT_S = 3.0
READY_TIMEOUT_S = 20.0
#: A startup log line naming the port the app listens on ("listening on http://0.0.0.0:3000").
LISTENING = re.compile(r"listening on \S*?:(\d+)", re.IGNORECASE)
SHUTDOWN_LIMIT_S = 10.0
SHUTDOWN_CODES = (1001, 1012)
VALID_WS_PATHS = ("/_ws/", "/_ws/preflight/check")
INVALID_WS_PATHS = ("/_ws", "/ws/", "/socket.io", "/liveblog/_ws/", "/")
SIGTERM_CLIENTS = 3
#: The ports the platform gives an app as ``PORT``; ``check`` starts a project's app on one.
PLATFORM_PORTS = range(3001, 4000)
#: The one port of that range that Chromium refuses to load pages from (ERR_UNSAFE_PORT).
CHROMIUM_UNSAFE_PORT = 3659


@dataclass(frozen=True)
class Rule:
    """One platform rule, as the report, its JSON and the table in docs/cli.md give it.

    Attributes:
        name: what it checks (``health-get``, ``ws-invalid``, ...), the report's rule column.
        requirement: what the app must do to pass.
        warns: what passes but should improve (empty when nothing warns).
        fails: what fails it (empty when nothing does).
    """

    name: str
    requirement: str
    warns: str = ""
    fails: str = ""


def _health_rule(method: str) -> Rule:
    """Return the health-check rule for ``method`` (GET and HEAD have one each)."""
    return Rule(
        f"health-{method.lower()}",
        f"the literal {method} {HEALTH_PATH} answers 200 without a redirect in at most "
        f"{HEALTH_WARN_MS:.0f} ms (median of {HEALTH_SAMPLES} fresh connections)",
        f"{HEALTH_WARN_MS:.0f}-{HEALTH_FAIL_MS:.0f} ms",
        f"not 200, a redirect, over {HEALTH_FAIL_MS:.0f} ms, or no answer",
    )


#: Every rule by name, in report order: the one source of ``check``'s report, of its JSON and of
#: the rules table in docs/cli.md (a test compares them).
RULES = {
    rule.name: rule
    for rule in (
        Rule(
            "port",
            "the app listens on PORT",
            fails="nothing listens on PORT, the app exits, or it logs another port",
        ),
        Rule("startup", f"listening within {READY_WARN_S:.0f} s", warns="later"),
        _health_rule("GET"),
        _health_rule("HEAD"),
        Rule(
            "home",
            f"GET / answers 200 within {HOME_WARN_MS / 1000:.0f} s, not followed",
            f"3xx or 4xx, or {HOME_WARN_MS / 1000:.0f}-{HOME_FAIL_MS / 1000:.0f} s",
            f"5xx, no answer, or over {HOME_FAIL_MS / 1000:.0f} s",
        ),
        Rule(
            "ws-valid",
            f"handshakes on {', '.join(VALID_WS_PATHS)} (and /socket.io/ when socketio_paths "
            "is yes) get 101",
            fails="any is refused or not answered",
        ),
        Rule(
            "ws-invalid",
            f"handshakes on {', '.join(INVALID_WS_PATHS)} (and /socket.io/ when socketio_paths "
            "is no) are refused",
            fails="any gets 101 or no answer",
        ),
        Rule(
            "ws-plain-get",
            f"GET {VALID_WS_PATHS[0]} without Upgrade is not answered 101 or 2xx",
            fails="it is, or it is not answered",
        ),
        Rule(
            "sigterm",
            f"with {SIGTERM_CLIENTS} WebSocket clients open, SIGTERM closes each with "
            f"{' or '.join(map(str, SHUTDOWN_CODES))} and the process exits (0 or by the "
            f"signal) within {SHUTDOWN_LIMIT_S:.0f} s",
            fails="otherwise",
        ),
    )
}


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one platform rule.

    Attributes:
        rule: the name of the rule in ``RULES``.
        status: ``pass``, ``warn``, ``fail``, or ``skip`` when it does not apply to the target.
        detail: one line saying what was seen.
    """

    rule: str
    status: Status
    detail: str

    def as_json(self) -> dict[str, str]:
        """Return the outcome as JSON-ready data, with the rule's requirement."""
        return {
            "rule": self.rule,
            "requirement": RULES[self.rule].requirement,
            "status": self.status,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Report:
    """All rule outcomes for one target.

    Attributes:
        target: the URL or project directory checked.
        url: the base URL the probes used.
        results: one result per rule, in check order.
    """

    target: str
    url: str
    results: list[RuleResult]

    @property
    def ok(self) -> bool:
        """Tell whether no rule failed (warnings pass)."""
        return all(r.status != "fail" for r in self.results)

    def as_json(self) -> dict[str, object]:
        """Return the report as JSON-ready data."""
        return {
            "target": self.target,
            "url": self.url,
            "ok": self.ok,
            "results": [r.as_json() for r in self.results],
        }


@dataclass(frozen=True)
class Endpoint:
    """Where the app listens.

    Attributes:
        host: host name or address.
        port: TCP port.
    """

    host: str
    port: int

    @property
    def url(self) -> str:
        """The base ``http://`` URL."""
        return f"http://{self.host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """Return the endpoint of a plain ``http://`` URL.

    Raises:
        CliError: ``https://`` or another scheme, or a missing host.
    """
    parts = urlsplit(url)
    if parts.scheme == "https":
        raise CliError(
            f"{url!r} uses TLS; give the app's plain http:// URL (the platform terminates TLS)"
        )
    if parts.scheme != "http" or not parts.hostname:
        raise CliError(f"{url!r} is neither a project directory nor an http:// URL")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise CliError(f"{url!r} has an invalid port") from exc
    return Endpoint(parts.hostname, port)


def _why(exc: OSError) -> str:
    """Say why a probe got no answer: a timeout, or the connection's error."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    return str(exc) or type(exc).__name__


def _http(
    endpoint: Endpoint, method: str, path: str, timeout: float = PROBE_TIMEOUT_S
) -> tuple[int, str, float]:
    """Send one request on a fresh connection; return status, Location header and elapsed ms.

    Raises:
        OSError: no connection, or ``TimeoutError``: nothing to read for ``timeout`` (each read
            has its own, so an answer trickling in byte by byte is not cut short).
    """
    started = time.perf_counter()
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
    try:
        conn.request(method, path, headers={"User-Agent": "vip-skeleton-check"})
        response = conn.getresponse()
        response.read()
        return (
            response.status,
            response.getheader("Location") or "",
            (time.perf_counter() - started) * 1000,
        )
    finally:
        conn.close()


def ws_handshake_status(
    endpoint: Endpoint, path: str, timeout: float = PROBE_TIMEOUT_S
) -> int | None:
    """Send a WebSocket opening handshake for ``path``; return the response status.

    Returns ``None`` when the server closes the connection without an HTTP response.

    Raises:
        OSError: no connection, or no status line within ``timeout`` (``TimeoutError``).
    """
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {endpoint.host}:{endpoint.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    deadline = time.monotonic() + timeout
    with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n" not in data:
            # The whole status line within ``timeout``, however slowly it trickles in.
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(1024)
            if not chunk:
                return None
            data += chunk
    fields = data.split(b"\r\n", 1)[0].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def check_health(endpoint: Endpoint, method: str, samples: int = HEALTH_SAMPLES) -> RuleResult:
    """``health-get``, ``health-head``: ``method /cache-healthcheck?`` answers 200, fast.

    A redirect fails. Timing is the median of ``samples`` requests on fresh connections, end to
    end.
    """
    rule = f"health-{method.lower()}"
    timings: list[float] = []
    for _ in range(samples):
        try:
            status, location, ms = _http(endpoint, method, HEALTH_PATH)
        except OSError as exc:
            return RuleResult(rule, "fail", f"{method} {HEALTH_PATH}: {_why(exc)}")
        if status != 200 or location:
            where = f" -> {location}" if location else ""
            return RuleResult(
                rule, "fail", f"{method} {HEALTH_PATH} answered {status}{where}, not 200"
            )
        timings.append(ms)
    median = statistics.median(timings)
    detail = f"200 in {median:.0f} ms (median of {samples}, max {max(timings):.0f} ms)"
    if median > HEALTH_FAIL_MS:
        return RuleResult(rule, "fail", f"{detail}; must be under {HEALTH_FAIL_MS:.0f} ms")
    if median > HEALTH_WARN_MS:
        return RuleResult(rule, "warn", f"{detail}; should be under {HEALTH_WARN_MS:.0f} ms")
    return RuleResult(rule, "pass", detail)


def check_home(endpoint: Endpoint) -> RuleResult:
    """``home``: ``GET /`` answers 200 within 1 s (warn), 2 s (fail), without a redirect."""
    try:
        status, location, ms = _http(endpoint, "GET", "/")
    except OSError as exc:
        return RuleResult("home", "fail", f"GET /: {_why(exc)}")
    if status >= 500:
        return RuleResult("home", "fail", f"GET / answered {status}")
    if status != 200:
        where = f" -> {location}" if location else ""
        return RuleResult("home", "warn", f"GET / answered {status}{where}, not 200")
    if ms > HOME_FAIL_MS:
        return RuleResult("home", "fail", f"200 in {ms:.0f} ms; must be under 2 s")
    if ms > HOME_WARN_MS:
        return RuleResult("home", "warn", f"200 in {ms:.0f} ms; should be under 1 s")
    return RuleResult("home", "pass", f"200 in {ms:.0f} ms")


def check_ws_valid(endpoint: Endpoint, paths: tuple[str, ...]) -> RuleResult:
    """``ws-valid``: handshakes on allowed paths are accepted (101)."""
    bad = []
    for path in paths:
        try:
            status = ws_handshake_status(endpoint, path)
        except OSError as exc:
            return RuleResult("ws-valid", "fail", f"{path}: {_why(exc)}")
        if status != 101:
            bad.append(f"{path} -> {status or 'closed'}")
    if bad:
        return RuleResult("ws-valid", "fail", "upgrade refused: " + ", ".join(bad))
    return RuleResult("ws-valid", "pass", "101 on " + ", ".join(paths))


def check_ws_invalid(endpoint: Endpoint, paths: tuple[str, ...]) -> RuleResult:
    """``ws-invalid``: handshakes on any other path are refused (anything but 101)."""
    accepted, seen = [], []
    for path in paths:
        try:
            status = ws_handshake_status(endpoint, path)
        except TimeoutError as exc:  # a hung server has refused nothing
            return RuleResult("ws-invalid", "fail", f"{path}: {_why(exc)}")
        except OSError:  # reset: refused
            status = None
        seen.append(f"{path} -> {status or 'closed'}")
        if status == 101:
            accepted.append(path)
    if accepted:
        return RuleResult(
            "ws-invalid", "fail", "upgrade accepted on invalid path " + ", ".join(accepted)
        )
    return RuleResult("ws-invalid", "pass", "refused: " + ", ".join(seen))


def check_ws_plain_get(endpoint: Endpoint) -> RuleResult:
    """``ws-plain-get``: a plain GET (no Upgrade) on a WebSocket path is not answered 101 or 2xx."""
    try:
        status, _, _ = _http(endpoint, "GET", VALID_WS_PATHS[0])
    except TimeoutError as exc:
        return RuleResult("ws-plain-get", "fail", f"GET {VALID_WS_PATHS[0]}: {_why(exc)}")
    except OSError as exc:
        return RuleResult("ws-plain-get", "pass", f"connection refused the request: {exc}")
    if status == 101 or 200 <= status < 300:
        return RuleResult(
            "ws-plain-get",
            "fail",
            f"GET {VALID_WS_PATHS[0]} without Upgrade answered {status}",
        )
    return RuleResult(
        "ws-plain-get", "pass", f"GET {VALID_WS_PATHS[0]} without Upgrade answered {status}"
    )


def check_running(
    endpoint: Endpoint, progress: Callable[[str], None], *, socketio: bool | None
) -> list[RuleResult]:
    """Run the HTTP and WebSocket rules against an app listening at ``endpoint``.

    ``socketio`` says whether ``/socket.io/`` upgrades must be accepted (``True``), refused
    (``False``) or are not checked (``None``, for a URL target whose answers are unknown).
    ``progress`` is told each rule before it runs. Each probe waits at most
    ``PROBE_TIMEOUT_S`` and a rule stops at its first unanswered probe, so a hung app fails
    every rule within seconds rather than stalling.
    """
    valid = VALID_WS_PATHS + (("/socket.io/",) if socketio else ())
    invalid = INVALID_WS_PATHS + (("/socket.io/",) if socketio is False else ())
    probes: list[tuple[str, Callable[[], RuleResult]]] = [
        ("health-get", lambda: check_health(endpoint, "GET")),
        ("health-head", lambda: check_health(endpoint, "HEAD")),
        ("home", lambda: check_home(endpoint)),
        ("ws-valid", lambda: check_ws_valid(endpoint, valid)),
        ("ws-invalid", lambda: check_ws_invalid(endpoint, invalid)),
        ("ws-plain-get", lambda: check_ws_plain_get(endpoint)),
    ]
    results = []
    for rule, probe in probes:
        progress(f"{rule}: {RULES[rule].requirement}")
        results.append(probe())
    return results


def free_port() -> int:
    """Return a port of ``PLATFORM_PORTS`` that was free on 127.0.0.1 a moment ago.

    Raises:
        CliError: none of 50 ports tried at random was free.
    """
    for _ in range(50):
        port = random.choice(PLATFORM_PORTS)  # noqa: S311 - not for security
        if port == CHROMIUM_UNSAFE_PORT:  # the page must open in a browser
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise CliError(
        f"no free port in {PLATFORM_PORTS.start}-{PLATFORM_PORTS.stop - 1} to start the app on"
    )


def _interpreter(project: Path) -> tuple[str, dict[str, str]]:
    """Return the project's Python and the extra environment it needs to import the package."""
    venv = project / ".venv" / "bin" / "python"
    if venv.is_file():
        return str(venv), {}
    path = os.pathsep.join(p for p in (str(project / "src"), os.environ.get("PYTHONPATH")) if p)
    return sys.executable, {"PYTHONPATH": path}


def _last_line(log: IO[str]) -> str:
    """Return the last non-blank line the app wrote so far."""
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _wait_ready(
    proc: subprocess.Popen[bytes], endpoint: Endpoint, log: IO[str], timeout: float
) -> float | str:
    """Wait until ``endpoint`` accepts TCP connections; return seconds taken, or why not.

    Gives up early when the app exits, or logs that it listens on a port other than ``PORT``.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            return (
                f"the app exited with status {proc.returncode} before listening: {_last_line(log)}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection((endpoint.host, endpoint.port), 0.2),
        ):
            return time.monotonic() - started
        log.seek(0)
        for port in LISTENING.findall(log.read()):
            if int(port) != endpoint.port:
                return f"the app listens on port {port}, not on PORT={endpoint.port}"
        time.sleep(0.05)
    return (
        f"nothing listens on PORT={endpoint.port} after {timeout:.0f} s (does the app read PORT?)"
    )


def _hold(client: ClientConnection, codes: list[int | None]) -> None:
    """Read from ``client`` until the server closes it; record the close code (None: no frame)."""
    try:
        while True:
            client.recv()
    except ConnectionClosed as exc:
        codes.append(exc.rcvd.code if exc.rcvd is not None else None)


def check_sigterm(proc: subprocess.Popen[bytes], endpoint: Endpoint) -> RuleResult:
    """``sigterm``: open clients get close code 1001 or 1012; the process exits within 10 s."""
    url = f"ws://{endpoint.host}:{endpoint.port}{VALID_WS_PATHS[1]}"
    codes: list[int | None] = []
    with contextlib.ExitStack() as stack:
        try:
            clients = [
                stack.enter_context(connect(url, open_timeout=5, close_timeout=1))
                for _ in range(SIGTERM_CLIENTS)
            ]
        except Exception as exc:  # OSError, InvalidHandshake, TimeoutError...
            return RuleResult("sigterm", "fail", f"cannot open WebSocket clients on {url}: {exc}")
        threads = [threading.Thread(target=_hold, args=(c, codes), daemon=True) for c in clients]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=SHUTDOWN_LIMIT_S)
        elapsed = time.monotonic() - started
        for thread in threads:
            thread.join(timeout=1)
    shown = ", ".join(str(c) if c is not None else "none (TCP dropped)" for c in codes) or "none"
    if proc.returncode is None:
        return RuleResult(
            "sigterm",
            "fail",
            f"still running {SHUTDOWN_LIMIT_S:.0f} s after SIGTERM; close codes: {shown}",
        )
    if len(codes) < SIGTERM_CLIENTS or any(c not in SHUTDOWN_CODES for c in codes):
        return RuleResult("sigterm", "fail", f"clients closed with {shown}; expected 1001 or 1012")
    if proc.returncode not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
        return RuleResult("sigterm", "fail", f"exited with status {proc.returncode} after SIGTERM")
    return RuleResult(
        "sigterm",
        "pass",
        f"{len(codes)} clients closed with {shown}; exited {proc.returncode} in {elapsed:.1f} s",
    )


@contextlib.contextmanager
def _started(
    project: Path, package: str, port: int
) -> Iterator[tuple[subprocess.Popen[bytes], IO[str]]]:
    """Start ``python -m package`` in ``project`` with ``PORT`` set; kill what is left on exit.

    Yields the process and the file collecting its output.
    """
    python, extra = _interpreter(project)
    env = {**os.environ, **extra, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [python, "-m", package],
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            yield proc, log
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def check_project(
    project: Path, progress: Callable[[str], None], startup_timeout: float = READY_TIMEOUT_S
) -> Report:
    """Start the project's app on a random ``PORT`` and run every rule, SIGTERM last.

    The app gets ``startup_timeout`` seconds to accept connections on ``PORT``.
    """
    answers = read_answers(project)
    package = answers.get("package_name")
    if not isinstance(package, str) or not package:
        raise CliError(f"{project} records no package_name in its answers file")
    socketio = answers.get("socketio_paths")
    port = free_port()
    endpoint = Endpoint("127.0.0.1", port)
    results: list[RuleResult] = []
    progress(f"starting the app with PORT={port}")
    with _started(project, package, port) as (proc, log):
        ready = _wait_ready(proc, endpoint, log, startup_timeout)
        if isinstance(ready, str) and "ModuleNotFoundError" in ready:
            # Not a broken rule: the app cannot even be imported here.
            missing = ready.rpartition("ModuleNotFoundError: ")[2]
            raise CliError(
                f"cannot start the app of {project} ({missing}): install the project first "
                f"(python -m venv .venv && .venv/bin/pip install -e {project})"
            )
        if isinstance(ready, str):
            results.append(RuleResult("port", "fail", ready))
            results.extend(
                RuleResult(rule, "skip", "not run: the app does not listen on PORT")
                for rule in list(RULES)[1:]
            )
            return Report(str(project), endpoint.url, results)
        results.append(RuleResult("port", "pass", f"listening on PORT={port}"))
        status: Status = "pass" if ready <= READY_WARN_S else "warn"
        results.append(RuleResult("startup", status, f"accepting connections after {ready:.1f} s"))
        results.extend(
            check_running(
                endpoint, progress, socketio=socketio if isinstance(socketio, bool) else None
            )
        )
        progress("sending SIGTERM with WebSocket clients open")
        results.append(check_sigterm(proc, endpoint))
    return Report(str(project), endpoint.url, results)


def check_url(url: str, progress: Callable[[str], None]) -> Report:
    """Run the rules that apply to an already running app at ``url``."""
    endpoint = parse_url(url)
    progress(f"probing {endpoint.url}")
    try:
        socket.create_connection((endpoint.host, endpoint.port), timeout=5).close()
    except OSError as exc:
        raise CliError(f"cannot connect to {endpoint.url}: {exc}") from exc
    results = check_running(endpoint, progress, socketio=None)
    skipped = "only checked for a project directory, which check starts itself"
    results[:0] = [
        RuleResult("port", "skip", skipped),
        RuleResult("startup", "skip", skipped),
    ]
    results.append(RuleResult("sigterm", "skip", skipped))
    return Report(url, endpoint.url, results)
