"""Shared fixtures for the template's tests: isolation from user settings, rendering."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import copier
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The one port of 3001-3999 that Chromium refuses to load pages from (ERR_UNSAFE_PORT).
CHROMIUM_UNSAFE_PORT = 3659
#: What a template snapshot holds: the files copier reads, nothing of the developer's work tree.
TEMPLATE_FILES = ("copier.yml", "template", "hooks")


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
    settings = tmp_path_factory.mktemp("copier-settings") / "settings.yml"
    settings.write_text("defaults: {}\n")
    saved = os.environ.get("COPIER_SETTINGS_PATH")
    os.environ["COPIER_SETTINGS_PATH"] = str(settings)
    yield
    if saved is None:
        del os.environ["COPIER_SETTINGS_PATH"]
    else:
        os.environ["COPIER_SETTINGS_PATH"] = saved


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` with a fixed identity and return its output."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout


def snapshot_template(dest: Path, tag: str | None = None) -> Path:
    """Copy the template's files into a new git repository at ``dest``, committed (and tagged)."""
    dest.mkdir(parents=True)
    for name in TEMPLATE_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "template snapshot")
    if tag:
        git(dest, "tag", tag)
    return dest


@pytest.fixture(scope="session")
def template_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One committed snapshot of the template, so renders never depend on a dirty work tree."""
    return snapshot_template(tmp_path_factory.mktemp("snapshot") / "template")


def platform_port() -> int:
    """Return a free port in 3001-3999, the range the platform's preflight picks ``PORT`` from."""
    for _ in range(50):
        port = random.randint(3001, 3999)  # noqa: S311 - not for security
        if port == CHROMIUM_UNSAFE_PORT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 3001-3999")


def render(template: Path, dest: Path, **data: Any) -> Path:
    """Render ``template`` into ``dest`` with default answers overridden by ``data``."""
    copier.run_copy(str(template), str(dest), data=data, defaults=True, vcs_ref="HEAD", quiet=True)
    return dest
