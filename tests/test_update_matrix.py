"""The update matrix: a project generated from each of the last releases, with a user's own code,
updated to this checkout's template: no conflict, and its whole suite passes.

Offline and hermetic: the releases come from this repository's tags (``scripts/tag-releases``
makes them in any clone) and this checkout's template is imported next to them in a temporary
template repository, as a newer version. The updated projects run their suites with this
interpreter (the ``test`` extra holds the generated app's dependencies), so no virtualenv is made.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import copier
import pytest
from packaging.version import InvalidVersion, Version

from cli_support import assert_no_conflict, commit_all, run_project_tests
from conftest import REPO_ROOT
from vip_skeleton.source import SNAPSHOT_PATHS, import_snapshot

#: How many of the newest releases a project is updated from.
RELEASES = 2
#: The version this checkout's template gets in the temporary template repository.
HEAD_VERSION = "999.0.0"
PACKAGE = "my_app"

#: A user's change to the demo service (in a release that has service.py): one more message type.
SERVICE_ANCHOR = '        if message["type"] != "whoami":\n'
SERVICE_EDIT = (
    '        if message["type"] == "echo":\n'
    '            connection.send({"echo": message.get("text")})\n'
    "            return\n"
)
#: The user's own test of it.
USER_TEST = '''"""The echo message this project added to the demo service."""

import asyncio
import json

import aiohttp

from conftest import start_server


def test_echo_answers_the_sender() -> None:
    server = start_server()

    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{server.ws_base}/_ws/echo") as ws,
        ):
            await ws.send_str(json.dumps({"type": "echo", "text": "hi"}))
            async with asyncio.timeout(10):
                while (frame := json.loads((await ws.receive()).data)).get("type") != "message":
                    pass
            assert frame["data"] == {"echo": "hi"}

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
'''


def last_releases() -> list[str]:
    """Return the newest ``RELEASES`` release tags of this repository, oldest first."""
    tags = subprocess.run(
        ["git", "tag", "--list"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    versions = []
    for tag in tags:
        try:
            versions.append((Version(tag), tag))
        except InvalidVersion:
            continue
    return [tag for _, tag in sorted(versions)[-RELEASES:]]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A template repository holding the last releases and this checkout's template, tagged."""
    repo = tmp_path_factory.mktemp("upstream") / "template"
    for tag in last_releases():
        archive = subprocess.run(
            ["git", "archive", tag, *SNAPSHOT_PATHS], cwd=REPO_ROOT, capture_output=True, check=True
        ).stdout
        released = tmp_path_factory.mktemp(f"release-{tag}")
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(released, filter="data")
        import_snapshot(released, tag, repo)
    import_snapshot(REPO_ROOT, HEAD_VERSION, repo)
    return repo


def test_there_are_releases_to_update_from() -> None:
    assert len(last_releases()) == RELEASES, "no release tags here: run scripts/tag-releases"


@pytest.mark.slow
@pytest.mark.parametrize("release", last_releases())
def test_a_project_of_a_release_updates_to_head_and_passes_its_suite(
    upstream: Path, tmp_path: Path, release: str
) -> None:
    project = tmp_path / "my-app"
    # Copying an old release may need trust (0.1.0 had a migration); the update must not.
    copier.run_copy(str(upstream), project, vcs_ref=release, defaults=True, unsafe=True, quiet=True)
    service = project / "src" / PACKAGE / "service.py"
    if service.exists():  # releases before 0.2.0 had no service.py: the update adds it
        text = service.read_text()
        assert SERVICE_ANCHOR in text, "the user's edit no longer fits the demo service"
        service.write_text(text.replace(SERVICE_ANCHOR, SERVICE_EDIT + SERVICE_ANCHOR))
        (project / "tests" / "test_echo.py").write_text(USER_TEST)
    commit_all(project, "Generate, and make it mine")
    users_service = service.read_text() if service.exists() else None

    copier.run_update(project, defaults=True, overwrite=True, conflict="rej", quiet=True)

    assert_no_conflict(project)
    assert f"_commit: {HEAD_VERSION}\n" in (project / ".copier-answers.yml").read_text()
    if users_service is not None:
        assert service.read_text() == users_service
    run_project_tests(project, "-x")
