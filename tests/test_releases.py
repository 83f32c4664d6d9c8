"""Releases as plain copier sees them in a clone of this repository (CONTRIBUTING.md, "Releases").

A release is a commit of main, "Release X.Y.Z", whose pyproject.toml names ``X.Y.Z`` and whose
CHANGELOG.md has its heading; ``scripts/tag-releases`` tags it ``X.Y.Z`` (annotated) in any
clone, so the tags never depend on being pushed or fetched. Copier copies the newest release tag
and records it; with no tags it records the commit. The template has no tasks, migrations or Jinja
extensions, so neither copying nor any update ever needs ``--trust``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.version import InvalidVersion, Version

from cli_support import files
from conftest import REPO_ROOT, git
from vip_skeleton import __version__, source
from vip_skeleton.source import import_snapshot

TAG_RELEASES = REPO_ROOT / "scripts" / "tag-releases"


def copier(cwd: Path, *args: str) -> None:
    """Run the copier command line, as a user would, without ``--trust``."""
    done = subprocess.run(
        [sys.executable, "-m", "copier", *args, "--defaults", "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def recorded_commit(project: Path) -> str:
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return str(answers["_commit"])


def commit_project(project: Path) -> None:
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Generate")


def upstream_at(path: Path, version: str) -> Path:
    """A template repository at ``path``: this template's files, committed and tagged."""
    import_snapshot(REPO_ROOT, version, path)
    return path


def commit_file(repo: Path, name: str, text: str, message: str) -> None:
    """Add ``template/name`` holding ``text`` to ``repo`` and commit it."""
    (repo / "template" / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def release_versions(tags: list[str]) -> list[str]:
    """Return the tags that are PEP 440 versions."""
    versions = []
    for tag in tags:
        try:
            Version(tag)
        except InvalidVersion:
            continue
        versions.append(tag)
    return versions


def changelog_releases() -> list[str]:
    """Return the versions CHANGELOG.md has a heading for, newest first."""
    headings = re.findall(r"^## (\S+)", (REPO_ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    return [heading for heading in headings if heading != "Unreleased"]


def tag_releases(repo: Path) -> str:
    """Run scripts/tag-releases in ``repo`` and return what it printed."""
    done = subprocess.run(
        [str(TAG_RELEASES)], cwd=repo, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def tagged_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of this repository made without its tags, then tagged by scripts/tag-releases."""
    clone = tmp_path_factory.mktemp("clone") / "vip-skeleton"
    git(clone.parent, "clone", "-q", "--no-tags", str(REPO_ROOT), str(clone))
    assert git(clone, "tag", "--list") == ""
    tag_releases(clone)
    return clone


def test_tag_releases_tags_every_release_in_any_clone(tagged_clone: Path) -> None:
    assert tag_releases(tagged_clone) == "", "a second run changes nothing"
    tags = git(tagged_clone, "tag", "--list").split()
    assert sorted(tags, key=Version, reverse=True) == changelog_releases()
    for tag in tags:
        assert git(tagged_clone, "cat-file", "-t", f"refs/tags/{tag}").strip() == "tag"
        tagged = tomllib.loads(git(tagged_clone, "show", f"{tag}:pyproject.toml"))
        assert tagged["project"]["version"] == tag
        if tag in git(REPO_ROOT, "tag", "--list").split():
            # The same tag object in every clone: tagger and date come from the release commit.
            assert git(tagged_clone, "rev-parse", tag) == git(REPO_ROOT, "rev-parse", tag)


def test_the_cli_version_is_the_newest_tag() -> None:
    tags = git(REPO_ROOT, "tag", "--list").split()
    assert __version__ in tags, f"no tag {__version__} here: run scripts/tag-releases"
    assert max(release_versions(tags), key=Version) == __version__


def test_the_cli_ships_its_version_only_with_that_tag_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout whose template changed since its release tags it ``X.Y.Z+n``, even in an empty
    cache; ``X.Y.Z`` in the cache is always the release tag's content."""
    monkeypatch.setenv("VIP_SKELETON_CACHE_DIR", str(tmp_path / "cache"))
    bundled = source.bundled_source()
    for path in source.SNAPSHOT_PATHS:
        released = git(REPO_ROOT, "rev-parse", f"{__version__}:{path}")
        assert git(bundled.repo, "rev-parse", f"{__version__}:{path}") == released
    if bundled.tag != __version__:
        assert bundled.tag.startswith(f"{__version__}+")
        ours = git(bundled.repo, "rev-parse", f"{bundled.tag}^{{tree}}")
        assert ours != git(bundled.repo, "rev-parse", f"{__version__}^{{tree}}")


def test_the_release_wheel_and_copier_from_a_clone_record_the_same_version(
    tagged_clone: Path, tmp_path: Path
) -> None:
    newest = max(release_versions(git(tagged_clone, "tag", "--list").split()), key=Version)
    checkout = tmp_path / "release"
    git(tagged_clone, "worktree", "add", "-q", "--detach", str(checkout), newest)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(checkout)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("vip_skeleton-*.whl")
    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    settings = tmp_path / "copier-settings.yml"
    settings.write_text("defaults: {}\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(installed),
        "VIP_SKELETON_CACHE_DIR": str(tmp_path / "cache"),
        "COPIER_SETTINGS_PATH": str(settings),
    }
    (tmp_path / "cli").mkdir()
    made = subprocess.run(
        [sys.executable, "-m", "vip_skeleton", "new", "app", "--defaults"],
        cwd=tmp_path / "cli", env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (tmp_path / "copier").mkdir()
    copier(tmp_path / "copier", "copy", str(tagged_clone), "app")

    assert recorded_commit(tmp_path / "cli" / "app") == newest
    assert recorded_commit(tmp_path / "copier" / "app") == newest
    assert files(tmp_path / "cli" / "app") == files(tmp_path / "copier" / "app")


def test_the_template_never_needs_trust() -> None:
    config = yaml.safe_load((REPO_ROOT / "copier.yml").read_text())
    unsafe = {"_tasks", "_migrations", "_jinja_extensions"} & set(config)
    assert not unsafe, f"copier asks for --trust when a template has {sorted(unsafe)}"


def test_the_version_and_the_tags_match_the_changelog() -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    headings = re.findall(r"^## (\S+)", (REPO_ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    released = [heading for heading in headings if heading != "Unreleased"]
    assert headings[0] in ("Unreleased", version), "the newest entry comes first"
    assert released == sorted(released, key=Version, reverse=True), "newest release first"
    assert released[0] == version, "pyproject.toml names the newest release"
    tags = git(REPO_ROOT, "tag", "--list").split() if (REPO_ROOT / ".git").exists() else []
    for tag in release_versions(tags):
        assert tag in released, f"tag {tag} has no CHANGELOG.md entry"
        tagged = tomllib.loads(git(REPO_ROOT, "show", f"{tag}:pyproject.toml"))
        assert tagged["project"]["version"] == tag, f"tag {tag} is on another version's commit"


def test_a_clone_copies_the_newest_release_and_updates_without_trust(tmp_path: Path) -> None:
    upstream = upstream_at(tmp_path / "upstream", "0.1.0")
    commit_file(upstream, "RELEASED.md", "0.2.0\n", "Release 0.2.0")
    git(upstream, "tag", "0.2.0")
    commit_file(upstream, "UNRELEASED.md", "main\n", "Work after 0.2.0")
    git(tmp_path, "clone", "-q", str(upstream), "clone")
    clone = str(tmp_path / "clone")

    copier(tmp_path, "copy", clone, "newest")
    assert recorded_commit(tmp_path / "newest") == "0.2.0", "the newest release, not main's tip"
    assert not (tmp_path / "newest" / "UNRELEASED.md").exists()

    copier(tmp_path, "copy", "--vcs-ref", "0.1.0", clone, "older")
    commit_project(tmp_path / "older")
    copier(tmp_path / "older", "update")
    assert recorded_commit(tmp_path / "older") == "0.2.0"
    assert (tmp_path / "older" / "RELEASED.md").is_file()

    git(tmp_path / "older", "add", "-A")
    git(tmp_path / "older", "commit", "-q", "-m", "Update to 0.2.0")
    copier(tmp_path / "older", "update", "--vcs-ref", "HEAD")
    assert re.fullmatch(r"0\.2\.0-1-g[0-9a-f]+", recorded_commit(tmp_path / "older"))
    assert (tmp_path / "older" / "UNRELEASED.md").is_file()


def test_a_clone_without_tags_records_the_commit_and_updates(tmp_path: Path) -> None:
    upstream = upstream_at(tmp_path / "upstream", "0.1.0")
    git(tmp_path, "clone", "-q", "--no-tags", str(upstream), "clone")
    clone = str(tmp_path / "clone")
    copier(tmp_path, "copy", clone, "project")
    first = recorded_commit(tmp_path / "project")
    assert git(upstream, "rev-parse", "HEAD").startswith(first)
    commit_project(tmp_path / "project")

    commit_file(upstream, "LATER.md", "later\n", "Later work")
    git(tmp_path / "clone", "pull", "-q", "--no-tags")
    copier(tmp_path / "project", "update")
    assert git(upstream, "rev-parse", "HEAD").startswith(recorded_commit(tmp_path / "project"))
    assert (tmp_path / "project" / "LATER.md").is_file()
