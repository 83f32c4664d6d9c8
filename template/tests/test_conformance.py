"""RFC 6455 conformance: the Autobahn test cases, the field's reference, run by ``kosoku``.

Two runs, each under a minute:

- the WebSocket layer of ``/_ws/`` (the handover, then ``inbound.RawClient``) behind an echo
  endpoint (``echo_server.py``), through every case but performance (9.*) and compression (12.*,
  13.*: not offered): no case may fail;
- the app itself, on ``/_ws/``, through every framing and closing case that does not need an
  echo: each must be answered with the close code the RFC requires.

``docs/security.md`` explains the verdicts that are not OK (NON-STRICT and INFORMATIONAL).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PACKAGE, free_port

KOSOKU = shutil.which("kosoku", path=str(Path(sys.executable).parent)) or shutil.which("kosoku")
pytestmark = pytest.mark.skipif(
    KOSOKU is None,
    reason="kosoku (the Autobahn cases under Python 3; x86_64 Linux) is not installed:"
    " pip install -e '.[test]'",
)

NOT_RUN = ["-x", "9.*", "-x", "12.*", "-x", "13.*"]
#: Cases that need valid data echoed back: left out when the app itself is judged.
ECHO_ONLY = ["1.*", "6.1.*", "6.2.*", "6.5.*", "6.7.*", "6.9.*", "6.11.*", "6.22.*", "6.23.*"]
ECHO_ONLY += ["6.6.2", "6.6.5", "6.6.7", "6.6.9", "6.6.11", "7.1.1", "10.*"]
#: The verdicts docs/security.md explains: invalid UTF-8 refused with the right 1007, but once
#: the whole message is in rather than at the first invalid byte (fail fast).
NON_STRICT = {"6.4.1", "6.4.2", "6.4.3", "6.4.4"}
#: A 256 KiB message (1009 past MAX_MESSAGE_BYTES); close codes 5000 and 65535, answered with 1002.
INFORMATIONAL = {"7.1.6", "7.13.1", "7.13.2"}


def run_cases(url: str, outdir: Path, *selection: str) -> dict[str, dict[str, Any]]:
    """Run the Autobahn cases of ``selection`` against ``url``; each case's report by id."""
    assert KOSOKU is not None
    subprocess.run(
        [KOSOKU, "-m", "fuzzingclient", "-p", "4", "-o", str(outdir), *selection, url],
        capture_output=True,
        timeout=300,
        check=False,  # it exits non-zero when a case fails: judged below, case by case
    )
    index: dict[str, dict[str, dict[str, Any]]] = json.loads((outdir / "index.json").read_text())
    return {case: report for reports in index.values() for case, report in reports.items()}


def verdicts(cases: dict[str, dict[str, Any]], verdict: str) -> set[str]:
    return {case for case, report in cases.items() if verdict in report.values()}


@pytest.fixture
def echo_url() -> Iterator[str]:
    """The echo endpoint on the layer of ``/_ws/``, running as a process of its own."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "echo_server.py"), str(port)],
        env={**os.environ, "ECHO_PACKAGE": PACKAGE},
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, "the echo server exited"
            assert time.monotonic() < deadline, "the echo server did not listen within 15 s"
            time.sleep(0.05)
    yield f"ws://127.0.0.1:{port}/_ws/echo"
    process.kill()
    process.wait()


def test_the_websocket_layer_passes_every_autobahn_case(echo_url: str, tmp_path: Path) -> None:
    cases = run_cases(echo_url, tmp_path, *NOT_RUN)
    assert len(cases) == 247
    failed = {
        case: (report["behavior"], report["behaviorClose"])
        for case, report in cases.items()
        if report["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL")
        or report["behaviorClose"] not in ("OK", "INFORMATIONAL")
    }
    assert failed == {}
    assert verdicts(cases, "NON-STRICT") <= NON_STRICT
    assert verdicts(cases, "INFORMATIONAL") <= INFORMATIONAL


def test_the_app_closes_every_framing_and_closing_case_as_the_rfc_requires(
    make_server: Any, tmp_path: Path
) -> None:
    # The cases send thousands of frames a second: an allowance no client of the app gets.
    server = make_server(CLIENT_MESSAGES_PER_SECOND="1000000", CLIENT_BYTES_PER_SECOND="1000000000")
    excluded = [option for case in ECHO_ONLY for option in ("-x", case)]
    cases = run_cases(f"{server.ws_base}/_ws/", tmp_path, *NOT_RUN, *excluded)
    assert len(cases) > 150
    wrong = {
        case: (report["behaviorClose"], report["remoteCloseCode"])
        for case, report in cases.items()
        if report["behaviorClose"] not in ("OK", "INFORMATIONAL")
    }
    assert wrong == {}
