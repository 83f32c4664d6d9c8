"""Shared fixtures for the template's tests: isolation from user settings, rendering."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from rendering import user_settings_kept_out
from vip_skeleton import __version__, source

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """In CI (``VIP_SKELETON_NO_SKIPS=1``) a skipped test fails: browser, container, Redis and
    Node.js tests must run there, never quietly skip."""
    report = yield
    if report.skipped and os.environ.get("VIP_SKELETON_NO_SKIPS") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped, but CI runs every test: {report.longrepr}"
    return report


@pytest.fixture(autouse=True, scope="session")
def isolated_copier_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the user's copier settings (defaults, trusted sources) out of every test."""
    with user_settings_kept_out(tmp_path_factory.mktemp("copier-settings")):
        yield


@pytest.fixture(scope="session")
def template_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One committed snapshot of the template, so renders never depend on a dirty work tree.

    It holds the files vip-skeleton itself imports (``source.import_snapshot``), as they are in
    the work tree, tagged with the package version.
    """
    snapshot = tmp_path_factory.mktemp("snapshot") / "template"
    source.import_snapshot(REPO_ROOT, __version__, snapshot)
    return snapshot


def start_app(
    project: Path, port: int, env: dict[str, str], stderr: int | IO[bytes] = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """Run a project rendered as ``realtime-app`` with this interpreter (it has the app's
    dependencies) on ``port``, and wait for its health check.

    Raises:
        RuntimeError: it did not answer within 15 s.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "realtime_app"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project / "src"), "PORT": str(port), **env},
        stderr=stderr,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/cache-healthcheck?")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the app did not start")
