"""Shared fixtures for the template's tests: isolation from user settings, rendering."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import copier
import pytest

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


@pytest.fixture(scope="session")
def template_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One committed snapshot of the template, so renders never depend on a dirty work tree.

    It holds the files vip-skeleton itself imports (``source.import_snapshot``), as they are in
    the work tree, tagged with the package version.
    """
    snapshot = tmp_path_factory.mktemp("snapshot") / "template"
    source.import_snapshot(REPO_ROOT, __version__, snapshot)
    return snapshot


def render(template: Path, dest: Path, **data: Any) -> Path:
    """Render ``template`` into ``dest`` with default answers overridden by ``data``."""
    copier.run_copy(str(template), str(dest), data=data, defaults=True, vcs_ref="HEAD", quiet=True)
    return dest
