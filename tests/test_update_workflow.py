"""The generated workflow that proposes template updates (``template_updates``, README "Updates").

It is rendered and parsed, and its update step, the shell script as generated, runs against a
local template repository that has a newer release tag than the project: offline, hermetic.
Opening the pull request is GitHub's part (peter-evans/create-pull-request); the test checks what
the step hands it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from plumbum import local
from typer.testing import CliRunner

from cli_support import NOTES_V1, commit_all, git, isolate, release
from conftest import render
from vip_skeleton import __version__, source
from vip_skeleton.cli import app
from vip_skeleton.source import import_snapshot

WORKFLOW = Path(".github/workflows/template-update.yml")


def steps_of(project: Path) -> dict[str, dict[str, Any]]:
    """Return the workflow's steps by name (or by the action they use)."""
    workflow = yaml.safe_load((project / WORKFLOW).read_text())
    assert workflow[True]["schedule"], "it runs on a schedule (`on:` is YAML 1.1's true)"
    assert "workflow_dispatch" in workflow[True]
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "write"}
    [job] = workflow["jobs"].values()
    return {step.get("name") or step["uses"]: step for step in job["steps"]}


def test_the_workflow_is_rendered_by_default_and_left_out_on_request(
    template_snapshot: Path, tmp_path: Path
) -> None:
    steps = steps_of(render(template_snapshot, tmp_path / "on"))
    checkout = steps["actions/checkout@v4"]["with"]
    token = "${{ secrets.TEMPLATE_UPDATE_TOKEN || github.token }}"  # noqa: S105 - not a secret
    assert checkout["token"] == token
    assert checkout["fetch-depth"] == 0
    proposal = steps["Open or refresh the pull request"]
    assert proposal["uses"].startswith("peter-evans/create-pull-request@")
    assert "${{ steps.update.outputs.rejects || '- none' }}" in proposal["with"]["body"]
    assert "${{ steps.test.outcome }}" in proposal["with"]["body"]
    assert steps["Test"]["if"] == "steps.update.outputs.changed == 'true'"
    off = render(template_snapshot, tmp_path / "off", template_updates=False)
    assert not (off / WORKFLOW).exists()
    assert "### Proposed updates" not in (off / "README.md").read_text()


def copy(template: Path, dest: Path) -> Path:
    """Generate ``dest`` from ``template`` with plain copier and its default answers."""
    subprocess.run(
        [sys.executable, "-m", "copier", "copy", "--defaults", "--quiet", str(template), str(dest)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return dest


def run_update_step(project: Path, tmp_path: Path, path: str = "") -> dict[str, str]:
    """Run the update step's script in ``project`` as GitHub would; return its outputs.

    ``path`` goes first on ``PATH``, before this interpreter's scripts (copier, vip-skeleton).
    """
    script = steps_of(project)["Update to the newest template release"]["run"]
    outputs = tmp_path / "github-output"
    outputs.write_text("")
    venv_bin = ":".join(p for p in (path, str(Path(sys.executable).parent)) if p)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=project,
        env={
            **os.environ,
            "PATH": f"{venv_bin}:{os.environ['PATH']}",
            "GITHUB_OUTPUT": str(outputs),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    values: dict[str, str] = {}
    lines = iter(outputs.read_text().splitlines())
    for line in lines:
        if "<<" in line:
            key, _, end = line.partition("<<")
            values[key] = "\n".join(iter(lambda: next(lines), end))
        else:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_the_update_step_takes_the_newer_tag_and_names_the_conflicts(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    import_snapshot(release(tmp_path / "r1"), "1.0.0", upstream)
    project = copy(upstream, tmp_path / "project")
    notes = project / "NOTES.md"
    assert notes.read_text() == NOTES_V1
    notes.write_text(NOTES_V1.replace("Region B: template v1", "Region B: mine"))
    commit_all(project, "Generate, then edit NOTES.md where the next release changes it")
    import_snapshot(release(tmp_path / "r2", next_release=True), "1.1.0", upstream)

    outputs = run_update_step(project, tmp_path)

    assert outputs["before"] == "1.0.0"
    assert outputs["after"] == "1.1.0"
    assert outputs["changed"] == "true"
    assert outputs["rejects"] == "- `NOTES.md.rej`"
    assert "Region B: mine" in (project / "NOTES.md.rej").read_text()
    assert (project / "CONTRIBUTING.md").is_file(), "a file the release adds"
    assert "1.1.0" in git(project, "diff", "--", ".copier-answers.yml")


def test_the_update_step_changes_nothing_when_the_project_is_up_to_date(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    import_snapshot(release(tmp_path / "r1"), "1.0.0", upstream)
    project = copy(upstream, tmp_path / "project")
    commit_all(project, "Generate")

    outputs = run_update_step(project, tmp_path)

    assert outputs == {"before": "1.0.0", "after": "1.0.0", "changed": "false", "rejects": ""}


def test_the_update_step_updates_a_project_made_by_vip_skeleton_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project whose source is vip-skeleton's cache is updated by the installed vip-skeleton."""
    isolate(monkeypatch, tmp_path)
    cache = str(tmp_path / "vip-skeleton")  # where the cache is, as the step recognises it
    monkeypatch.setenv("VIP_SKELETON_CACHE_DIR", cache)
    monkeypatch.setitem(local.env, "VIP_SKELETON_CACHE_DIR", cache)  # type: ignore[arg-type]
    first = release(tmp_path / "r001")
    with monkeypatch.context() as installed:  # release 0.0.1 made the project
        installed.setattr(source, "bundled_snapshot", lambda: first)
        installed.setattr(source, "__version__", "0.0.1")
        made = CliRunner().invoke(app, ["new", str(tmp_path / "project"), "--defaults"])
    assert made.exit_code == 0, made.output
    project = tmp_path / "project"
    commit_all(project, "Generate")
    # The step's pipx run of the project's version needs PyPI; the cache already holds 0.0.1.
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "pipx").write_text("#!/bin/sh\necho 'pipx: no network here' >&2\nexit 1\n")
    (offline / "pipx").chmod(0o755)

    outputs = run_update_step(project, tmp_path, path=str(offline))

    assert outputs["before"] == "0.0.1"
    assert outputs["after"].startswith(__version__), "this checkout's vip-skeleton's template"
    assert outputs["changed"] == "true"
    assert outputs["rejects"] == ""
    assert not (project / "NOTES.md").exists(), "a file only 0.0.1 had is gone"
