"""Helpers for the CLI and update tests: isolated environments, simulated template releases.

A "release" is a directory shaped like an installed wheel's bundled template (copier.yml and
template/). Tests make the CLI treat one as its own (see ``Installed``), so the real
cache-repository machinery imports each release under its version tag.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plumbum import local

from rendering import git

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: A test-owned file added to every release: regions B and D let tests edit untouched and
#: changed regions of the same file.
NOTES_V1 = "Region A: header\nRegion B: template v1\nRegion C: middle\nRegion D: footer\n"
NOTES_V2 = "Region A: header\nRegion B: template v2\nRegion C: middle\nRegion D: footer\n"
#: socketio_paths' default in copier.yml, which reads the answer recorded under its old name.
RENAMED_ANSWER_DEFAULT = '"{{ socketio if socketio is defined else true }}"'


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Point the cache, copier's settings and git's identity at ``tmp_path``; return the env."""
    settings = tmp_path / "copier-settings.yml"
    settings.write_text("defaults: {}\n")
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = Test\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n"
    )
    env = {
        "VIP_SKELETON_CACHE_DIR": str(tmp_path / "cache"),
        "COPIER_SETTINGS_PATH": str(settings),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
        # copier runs git through plumbum, whose environment is a copy taken
        # when plumbum was imported.
        monkeypatch.setitem(local.env, key, value)  # type: ignore[arg-type]
    return env


def commit_all(cwd: Path, message: str = "commit") -> None:
    """``git init`` if needed, then commit everything in ``cwd``."""
    if not (cwd / ".git").exists():
        git(cwd, "init", "-q")
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "--allow-empty", "-m", message)


def assert_no_conflict(project: Path) -> None:
    """Assert an update left ``project`` without conflicts: no ``.rej`` file, no unmerged path,
    no conflict markers."""
    status = git(project, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert not [line for line in status if line.endswith(".rej")], status
    assert not git(project, "diff", "--name-only", "--diff-filter=U").strip()
    markers = subprocess.run(
        ["git", "grep", "-l", "--untracked", "^<<<<<<< "],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert markers.returncode == 1, f"conflict markers in {markers.stdout}"


def run_project_tests(project: Path, *args: str) -> str:
    """Run the tests of a generated ``project`` (pytest with ``args``) with this interpreter,
    whose ``test`` extra holds the app's dependencies; assert they pass and return their output."""
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project / "src")},
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    return suite.stdout


def release(dest: Path, *, pre_release: bool = False, next_release: bool = False) -> Path:
    """Write a template release into ``dest`` and return it.

    The base is this repository's template plus a test-owned NOTES.md. ``pre_release`` renames
    the question socketio_paths to its pre-0.1.0 name ``socketio`` (whose recorded answer the
    new question's default carries over). ``next_release`` changes the template the way a next
    release would: a changed line in NOTES.md, a line appended to .gitignore and to .env, a new
    file, and a change to the scaffold-once integers.py.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest.mkdir(parents=True)
    shutil.copy2(ROOT / "copier.yml", dest / "copier.yml")
    shutil.copytree(ROOT / "template", dest / "template", ignore=ignore)
    tpl = dest / "template"
    (tpl / "NOTES.md").write_text(NOTES_V2 if next_release else NOTES_V1)
    if next_release:
        with (tpl / ".gitignore").open("a") as fh:
            fh.write("# added by the next release\n*.log\n")
        with (tpl / ".env.jinja").open("a") as fh:
            fh.write("NEXT_RELEASE_SETTING=1\n")
        (tpl / "CONTRIBUTING.md").write_text("Added by the next release.\n")
        integers = tpl / "src" / "{{ package_name }}" / "integers.py"
        integers.write_text(integers.read_text() + "# changed by the next release\n")
    if pre_release:
        config = dest / "copier.yml"
        text = config.read_text()
        assert RENAMED_ANSWER_DEFAULT in text
        config.write_text(text.replace(RENAMED_ANSWER_DEFAULT, "true"))
        for path in [config, *tpl.rglob("*")]:
            if path.is_file():
                text = path.read_text()
                path.write_text(text.replace("socketio_paths", "socketio"))
        for path in sorted(tpl.rglob("*socketio_paths*"), reverse=True):
            path.rename(path.with_name(path.name.replace("socketio_paths", "socketio")))
    return dest


def files(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Return the files under ``root`` by relative path, less .git, answers file and ``skip``."""
    result = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() or rel.startswith(".git/") or rel == ".copier-answers.yml":
            continue
        if rel in skip:
            continue
        result[rel] = path.read_bytes()
    return result


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    """Return the process environment plus ``extra``, with this checkout's src on PYTHONPATH."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env
