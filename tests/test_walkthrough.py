"""The README's quick start, command by command, on a fresh virtualenv, as a newcomer runs it."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cli_support import GIT_IDENTITY, git
from conftest import REPO_ROOT
from vip_skeleton.check import free_port


def code_block(readme: Path, heading: str) -> list[str]:
    """The commands of the first ``sh`` block under ``heading``, without their comments."""
    text = readme.read_text()
    section = text[text.index(heading) :]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, f"no sh block under {heading!r}"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-ec", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def clone_with_work_tree(dest: Path) -> Path:
    """Clone this repository without its tags, as a newcomer's ``git clone`` may, and commit this
    checkout's own changes on top, so that the clone is what is tested, and clean."""
    git(dest.parent, "clone", "-q", "--no-tags", str(REPO_ROOT), str(dest))
    with tempfile.TemporaryDirectory() as tmp:
        # This checkout's files as git sees them (its .gitignore applies), in the clone's objects.
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(REPO_ROOT)}
        subprocess.run(
            ["git", "-C", str(dest), "add", "-A"], env={**os.environ, **index}, check=True
        )
        tree = subprocess.run(
            ["git", "-C", str(dest), "write-tree"],
            env={**os.environ, **index}, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    if tree != git(dest, "rev-parse", "HEAD^{tree}").strip():
        commit = git(dest, "commit-tree", tree, "-p", "HEAD", "-m", "Work in progress").strip()
        git(dest, "reset", "-q", "--hard", commit)
    return dest


def test_the_quick_start_and_the_generated_readme_work_as_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not p.startswith(sys.prefix)
    )
    # The user's own template cache stays out, and commits need no git identity of the machine.
    env["VIP_SKELETON_CACHE_DIR"] = str(tmp_path / "cache")
    env.update(GIT_IDENTITY)
    clone = clone_with_work_tree(tmp_path / "vip-skeleton")
    tag, install_and_generate = code_block(REPO_ROOT / "README.md", "## Quick start")[:2]
    assert tag == "scripts/tag-releases"
    result = bash(tag, clone, env)
    assert result.returncode == 0, result.stderr
    assert git(clone, "tag", "--list").split() == git(REPO_ROOT, "tag", "--list").split()
    assert install_and_generate.endswith("vip-skeleton new ../my-app --defaults")
    result = bash(install_and_generate.replace("pip install .", "pip install -q ."), clone, env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert git(clone, "status", "--porcelain", "--untracked-files=all") == "", "the clone is clean"
    project = tmp_path / "my-app"  # next to the clone, not inside it
    assert not (clone / "my-app").exists()

    # Then the project's own README: "Run it", line by line.
    venv, install_project, serve = code_block(project / "README.md", "## Run it")
    assert serve == "python -m my_app"  # the package is named after the folder
    result = bash(f"{venv}\n{install_project} -q", project, env)
    assert result.returncode == 0, result.stderr[-3000:]
    port = free_port()
    server = subprocess.Popen(
        ["bash", "-ec", f". .venv/bin/activate\nexec {serve}"],
        cwd=project,
        env={**env, "PORT": str(port)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/")
                page = conn.getresponse()
                break
            except OSError:
                assert time.monotonic() < deadline, "the app did not answer within 30 s"
                time.sleep(0.2)
        assert page.status == 200
        assert b"ws-client.js" in page.read()
    finally:
        server.terminate()
        assert server.wait(15) == 0

    # The next steps' commit, then the update commands of the project's README ("Updates").
    commit = next(line for line in next_steps() if line.startswith("git init"))
    result = bash(commit.split("  #")[0], project, env)
    assert result.returncode == 0, result.stderr
    result = bash(f". {clone}/.venv/bin/activate\nvip-skeleton check-update", project, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("up to date: this project uses template ")
    result = bash(f". {clone}/.venv/bin/activate\nvip-skeleton update", project, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(": nothing changed.\n"), result.stdout
    assert git(project, "status", "--porcelain") == ""


def next_steps() -> list[str]:
    """The lines copier shows after generating a project (copier.yml's message)."""
    message = yaml.safe_load((REPO_ROOT / "copier.yml").read_text())["_message_after_copy"]
    return [line.strip() for line in message.splitlines()]
