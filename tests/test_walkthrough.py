"""The README's quick start, command by command, on a fresh virtualenv, as a newcomer runs it."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

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


def test_the_quick_start_and_the_generated_readme_work_as_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not p.startswith(sys.prefix)
    )
    # The quick start's first command, in a clone (a copy here, so that the checkout stays clean).
    clone = tmp_path / "vip-skeleton"
    ignored = shutil.ignore_patterns(".git", ".venv", "*_cache", "__pycache__", "node_modules")
    shutil.copytree(REPO_ROOT, clone, ignore=ignored)
    first = code_block(REPO_ROOT / "README.md", "## Quick start")[0]
    assert first.endswith("vip-skeleton new ../my-app --defaults"), first
    result = bash(first.replace("pip install .", "pip install -q ."), clone, env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
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
