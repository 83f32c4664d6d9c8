"""The local template repository that makes offline ``new`` and ``update`` possible.

Copier can only three-way merge an update when one git repository holds both the template version
that generated a project and the version to update to, each under a PEP 440 tag. An installed wheel
carries only its own template snapshot, so vip-skeleton keeps a repository in the user's cache
directory (``$VIP_SKELETON_CACHE_DIR``, else ``$XDG_CACHE_HOME/vip-skeleton``, else
``~/.cache/vip-skeleton``, subdirectory ``template``) and imports the bundled snapshot into it as a
commit tagged with the package version whenever that exact content is missing. Versions accumulate
as the user upgrades, so a newer wheel finds the older version next to its own.

If the content of a version's tag differs from the bundled snapshot (a development install whose
template changed), the snapshot is tagged ``<version>+<n>``, a PEP 440 local version that sorts
after ``<version>``. A source checkout imports its own release tag of that version first, so a
template changed since the release never takes the release's version, even in an empty cache.
Commits have fixed author data and dates and no parent, so re-importing the same snapshot after the
cache was wiped yields the same commit id.
"""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from vip_skeleton import __version__
from vip_skeleton.errors import CliError

#: Paths of a template snapshot, relative to its root.
SNAPSHOT_PATHS = ("copier.yml", "template")
#: Pathspecs never imported (bytecode and tool caches of a source checkout).
_EXCLUDED = (
    ":(exclude,glob)**/__pycache__/**",
    ":(exclude,glob)**/*.pyc",
    ":(exclude,glob)**/.mypy_cache/**",
    ":(exclude,glob)**/.pytest_cache/**",
    ":(exclude,glob)**/.ruff_cache/**",
)
_COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "vip-skeleton",
    "GIT_AUTHOR_EMAIL": "vip-skeleton@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "vip-skeleton",
    "GIT_COMMITTER_EMAIL": "vip-skeleton@localhost",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
}


@dataclass(frozen=True)
class TemplateSource:
    """Where copier finds the bundled template.

    Attributes:
        repo: absolute path of the local template repository.
        url: the spelling recorded as ``_src_path`` (``~/...`` when under the home directory, so
            the project stays updatable by anyone whose cache sits at the same place).
        tag: the tag holding this installation's template.
    """

    repo: Path
    url: str
    tag: str


def bundled_snapshot() -> Path:
    """Return the directory holding this installation's copier.yml and template/.

    An installed wheel ships them as ``vip_skeleton/_template``; a source checkout uses the
    repository root.

    Raises:
        CliError: neither location holds a template.
    """
    packaged = Path(__file__).resolve().parent / "_template"
    checkout = Path(__file__).resolve().parents[2]
    for root in (packaged, checkout):
        if (root / "copier.yml").is_file() and (root / "template").is_dir():
            return root
    raise CliError(f"the bundled template is missing from {packaged}; reinstall vip-skeleton")


def cache_repo() -> Path:
    """Return the path of the local template repository (it may not exist yet)."""
    explicit = os.environ.get("VIP_SKELETON_CACHE_DIR")
    if explicit:
        base = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "vip-skeleton"
    return base.absolute() / "template"


def recorded_url(repo: Path) -> str:
    """Return how ``repo`` is recorded as ``_src_path``: ``~/...`` under the home directory."""
    try:
        return "~/" + repo.relative_to(Path.home()).as_posix()
    except ValueError:
        return repo.as_posix()


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``git -C repo args`` and return its standard output, without trailing whitespace.

    Raises:
        CliError: git is missing or the command fails (the message is git's last error line).
    """
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **(env or {})},
        )
    except FileNotFoundError as exc:
        raise CliError("git is not installed or not on PATH") from exc
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise CliError(f"git {args[0]} failed in {repo}: {lines[-1]}")
    return done.stdout.rstrip()


@contextmanager
def _locked(repo: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache so concurrent runs import one snapshot at a time."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    with open(repo.parent / "template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _snapshot_tree(repo: Path, snapshot: Path) -> str:
    """Write the snapshot's files into ``repo``'s object store and return their tree id."""
    with tempfile.TemporaryDirectory(prefix="vip-skeleton-index.") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(snapshot)}
        paths = [p for p in SNAPSHOT_PATHS if (snapshot / p).exists()]
        git(repo, "add", "--all", "--force", "--", *paths, *_EXCLUDED, env=env)
        return git(repo, "write-tree", env=env)


def _tags(repo: Path) -> list[str]:
    return git(repo, "tag", "--list").split()


def versions_in(repo: Path) -> list[str]:
    """Return the PEP 440 tags of ``repo``, oldest first."""
    found: list[tuple[Version, str]] = []
    for tag in _tags(repo):
        try:
            found.append((Version(tag), tag))
        except InvalidVersion:
            continue
    return [tag for _, tag in sorted(found)]


def import_snapshot(snapshot: Path, version: str, repo: Path) -> str:
    """Make sure ``repo`` holds ``snapshot`` under a tag for ``version``; return that tag.

    Creates the repository if needed. An existing tag (``version`` or ``version+n``) whose tree
    equals the snapshot is reused; otherwise a new parentless commit is tagged, the ``main`` branch
    moves to it and the work tree is reset to it, so the repository is never dirty.
    """
    with _locked(repo):
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True, exist_ok=True)
            git(repo, "init", "--quiet", "--initial-branch=main")
        tree = _snapshot_tree(repo, snapshot)
        tags = _tags(repo)
        candidates = [t for t in tags if t == version or t.startswith(version + "+")]
        for tag in candidates:
            if git(repo, "rev-parse", f"{tag}^{{tree}}") == tree:
                return tag
        tag = version
        if version in tags:
            numbers = [int(n) for t in candidates if (n := t.partition("+")[2]).isdigit()]
            tag = f"{version}+{max(numbers, default=0) + 1}"
        message = f"vip-skeleton {tag} template snapshot"
        commit = git(repo, "commit-tree", tree, "-m", message, env=_COMMIT_ENV)
        git(repo, "tag", tag, commit)
        git(repo, "reset", "--quiet", "--hard", commit)
        return tag


def _import_checkout_release(checkout: Path, repo: Path) -> None:
    """Import the release tag ``__version__`` of a source checkout of vip-skeleton into ``repo``.

    Does nothing for an installed wheel's snapshot, or a checkout without that tag
    (``scripts/tag-releases`` makes it).
    """
    if not (checkout / ".git").exists() or not has_revision(checkout, f"refs/tags/{__version__}"):
        return
    archive = subprocess.run(
        ["git", "-C", str(checkout), "archive", f"refs/tags/{__version__}", *SNAPSHOT_PATHS],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise CliError(f"git archive failed in {checkout}: {archive.stderr.decode().strip()}")
    with tempfile.TemporaryDirectory(prefix="vip-skeleton-release.") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        import_snapshot(Path(tmp), __version__, repo)


def bundled_source() -> TemplateSource:
    """Import this installation's template into the cache repository and describe it."""
    repo = cache_repo()
    snapshot = bundled_snapshot()
    _import_checkout_release(snapshot, repo)
    tag = import_snapshot(snapshot, __version__, repo)
    return TemplateSource(repo=repo, url=recorded_url(repo), tag=tag)


def is_cache_url(url: str) -> bool:
    """Tell whether a recorded ``_src_path`` names this user's template cache repository."""
    return Path(url).expanduser().absolute() == cache_repo()


def has_revision(repo: Path, revision: str) -> bool:
    """Tell whether ``revision`` names a commit in ``repo``."""
    try:
        git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except CliError:
        return False
    return True
