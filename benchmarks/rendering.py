"""Rendering the template, for this repository's tests and benchmarks alike.

``tests/`` imports this module too (``pythonpath`` in pyproject.toml puts ``benchmarks/`` on the
tests' path). The CLI does not: ``vip_skeleton.source`` keeps its own ``git``, which turns a failure
into the CLI's one-line error and commits with fixed dates, for the cache repository of users'
machines.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

#: The identity of the commits tests and benchmarks make: never the machine's git configuration.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run git in ``cwd`` with ``GIT_IDENTITY`` (and ``env``) and return its standard output.

    Raises:
        RuntimeError: git failed; the message holds its standard error.
    """
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_IDENTITY, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout


def render(template: Path, dest: Path, ref: str = "HEAD", **answers: object) -> Path:
    """Render ``template`` at the git revision ``ref`` into ``dest``; return ``dest``.

    Every question gets its default but those in ``answers``. The user's copier settings apply,
    unless ``user_settings_kept_out`` is in force.
    """
    import copier  # here: the servers under test import this module, without copier

    copier.run_copy(str(template), str(dest), data=answers, defaults=True, vcs_ref=ref, quiet=True)
    return dest


@contextmanager
def user_settings_kept_out(folder: Path) -> Iterator[None]:
    """Keep the user's copier settings (their defaults, trusted sources) out of every render.

    Points ``COPIER_SETTINGS_PATH`` at an empty settings file written in ``folder``, and back
    where it was on leaving.
    """
    settings = folder / "copier-settings.yml"
    settings.write_text("defaults: {}\n")
    saved = os.environ.get("COPIER_SETTINGS_PATH")
    os.environ["COPIER_SETTINGS_PATH"] = str(settings)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COPIER_SETTINGS_PATH"]
        else:
            os.environ["COPIER_SETTINGS_PATH"] = saved


def package_of(project: Path) -> str:
    """The import name of a rendered project's package (it follows the project's folder name)."""
    return next(p.parent.name for p in (project / "src").glob("*/__main__.py"))
