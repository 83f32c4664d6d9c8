"""Generate and update projects through copier's API, turning its failures into ``CliError``."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import copier
import yaml  # type: ignore[import-untyped]
from copier.errors import CopierError, UnsafeTemplateError
from packaging.version import InvalidVersion, Version
from plumbum import ProcessExecutionError

from vip_skeleton import source
from vip_skeleton.answers import ANSWERS_FILE, read_answers, recorded_template
from vip_skeleton.errors import CliError, one_line

Conflict = Literal["inline", "rej"]


@contextmanager
def copier_errors() -> Iterator[None]:
    """Re-raise copier's, git's and the file system's failures as one-line ``CliError``\\ s."""
    try:
        yield
    except (CliError, KeyboardInterrupt):
        # Ctrl-C at a prompt (copier's CopierAnswersInterrupt is also a KeyboardInterrupt): the
        # caller reports it in one line with exit code 130, never copier's internals.
        raise
    except UnsafeTemplateError as exc:
        first = str(exc).splitlines()[0].rstrip(".")
        raise CliError(f"{first}; rerun with --trust if you trust this template") from exc
    except ProcessExecutionError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines() or [one_line(exc)]
        raise CliError(f"{Path(str(exc.argv[0])).name} failed: {lines[-1].strip()}") from exc
    except CopierError as exc:
        raise CliError(one_line(exc)) from exc
    except (ValueError, TypeError) as exc:  # an answer copier could not cast to its type
        raise CliError(f"invalid answer: {one_line(exc)}") from exc
    except OSError as exc:
        raise CliError(one_line(exc)) from exc


def parse_data(pairs: list[str], data_file: Path | None) -> dict[str, Any]:
    """Merge ``--data-file`` (a YAML mapping) and ``--data KEY=VALUE`` pairs; pairs win.

    Values stay strings: copier casts them to each question's type and validates them.

    Raises:
        CliError: a pair has no ``=``, or the file is unreadable or not a mapping.
    """
    data: dict[str, Any] = {}
    if data_file is not None:
        try:
            loaded = yaml.safe_load(data_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(f"cannot read --data-file {data_file}: {one_line(exc)}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise CliError(f"--data-file {data_file} must hold a YAML mapping of answers")
        data.update(loaded or {})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--data expects KEY=VALUE, got {pair!r}")
        data[key.strip()] = value
    return data


#: What a yes/no answer may be given as on the command line (copier itself takes any word).
BOOLEANS = {"yes": True, "no": False, "true": True, "false": False, "1": True, "0": False}


def check_data(data: dict[str, Any], copier_yml: Path) -> dict[str, Any]:
    """Refuse answers to unknown questions and answers of the wrong type, naming the question.

    Returns:
        ``data`` with yes/no answers given as text turned into booleans and numbers into ints.

    Raises:
        CliError: A key is not a question of ``copier_yml``, or its value does not fit its type.
    """
    config = yaml.safe_load(copier_yml.read_text(encoding="utf-8")) or {}
    questions = {
        name: spec
        for name, spec in config.items()
        if not name.startswith("_") and not (isinstance(spec, dict) and spec.get("when") is False)
    }
    checked: dict[str, Any] = {}
    for key, value in data.items():
        if key not in questions:
            raise CliError(f"--data {key}: no such question (questions: {', '.join(questions)})")
        kind = questions[key].get("type") if isinstance(questions[key], dict) else None
        if kind == "bool" and isinstance(value, str):
            if value.strip().lower() not in BOOLEANS:
                raise CliError(f"--data {key}={value!r}: answer yes, no, true, false, 1 or 0")
            value = BOOLEANS[value.strip().lower()]
        elif kind == "int" and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise CliError(f"--data {key}={value!r}: {key} is a whole number") from None
        checked[key] = value
    return checked


def _is_remote(template: str) -> bool:
    """Tell whether ``template`` is a URL (``https://``, ``gh:``, ``git@``) rather than a path."""
    return re.match(r"^[a-z][a-z0-9+.-]*://|^[a-z]{2}:|^git@", template) is not None


def _template_url(template: str) -> str:
    """Return ``template`` with a local path made absolute, so updates work from any directory."""
    if _is_remote(template):
        return template
    path = Path(template).expanduser()
    return str(path.resolve()) if path.exists() else template


def _require_recorded_source(dest: Path, src_path: str) -> None:
    """Refuse a project whose recorded local template source is relative or no longer exists."""
    if _is_remote(src_path):
        return
    if not Path(src_path).expanduser().is_absolute():
        raise CliError(
            f"{dest / ANSWERS_FILE} records the relative template path {src_path}, which "
            "copier cannot update from: make its _src_path the template's absolute path or git "
            "URL, commit, and retry"
        )
    if not Path(src_path).expanduser().exists():
        raise CliError(
            f"the template source {src_path} recorded in {dest / ANSWERS_FILE} does not exist; "
            "restore it (or, for vip-skeleton's own template, set VIP_SKELETON_CACHE_DIR to "
            "the cache it was made with)"
        )


def template_warnings(template: str, vcs_ref: str | None) -> list[str]:
    """Return what a user should know before generating from the local ``template``.

    A git checkout with uncommitted changes is copied as it is only with ``--vcs-ref HEAD`` (or
    when it has no tags), and then copier records a commit that exists only in its temporary
    copy, so the project's first ``update`` fails with "Unknown revision". Remote templates and
    directories that are not git checkouts give no warning.
    """
    path = Path(template).expanduser()
    if _is_remote(template) or not (path / ".git").exists():
        return []
    try:
        dirty = _git_lines(path, "status", "--porcelain")
    except CliError:
        return []
    if not dirty:
        return []
    if vcs_ref not in (None, "HEAD") or (vcs_ref is None and source.versions_in(path)):
        return [
            f"the template {path.resolve()} has uncommitted changes, which this project will "
            "not get: it is made from a committed version"
        ]
    return [
        f"the template {path.resolve()} has uncommitted changes: copier includes them as a "
        "commit only its temporary copy has, so `update` will fail on this project; commit "
        "them in the template first"
    ]


def new_project(
    dest: Path,
    *,
    data: dict[str, Any],
    defaults: bool,
    template: str | None,
    vcs_ref: str | None,
    trust: bool,
) -> None:
    """Generate a project in ``dest`` from the bundled template, or from ``template`` if given.

    The bundled template needs no ``--trust``: it has no tasks, migrations or Jinja extensions.

    Raises:
        CliError: ``dest`` is a file or already holds files (a project is updated, never
            generated again).
    """
    if dest.exists() and not dest.is_dir():
        raise CliError(f"{dest} is a file; choose a new directory for the project")
    if dest.exists() and any(dest.iterdir()):
        raise CliError(
            f"{dest} already exists and is not empty; choose a new directory "
            "(to bring a project up to date, use `vip-skeleton update`)"
        )
    ref: str | None
    if template is None:
        bundled = source.bundled_source()
        src, ref, unsafe = bundled.url, vcs_ref or bundled.tag, False
    else:
        src, ref, unsafe = _template_url(template), vcs_ref, trust
    with copier_errors():
        copier.run_copy(
            src,
            dest,
            data=data,
            defaults=defaults,
            vcs_ref=ref,
            unsafe=unsafe,
        )


def _git_lines(dest: Path, *args: str) -> list[str]:
    """The lines git prints for ``args`` in ``dest`` (see ``source.git`` for its errors)."""
    return source.git(dest, *args).splitlines()


def _require_clean_git(dest: Path) -> None:
    """Refuse a project that is not a git work tree or has uncommitted changes."""
    try:
        _git_lines(dest, "rev-parse", "--show-toplevel")
    except CliError:
        raise CliError(
            f"{dest} is not a git repository; copier updates need one: "
            "run `git init && git add -A && git commit -m 'Generate project'` first"
        ) from None
    if _git_lines(dest, "status", "--porcelain", "--untracked-files=normal", "--", "."):
        raise CliError(f"{dest} has uncommitted changes; commit or stash them, then retry")


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True)
class Plan:
    """What an update of one project will use.

    Attributes:
        ref: the template version to update to (``None``: copier picks the newest tag).
        unsafe: whether copier may run a ``--template``'s tasks and migrations (``--trust``).
        current: the template version that generated the project, as recorded.
    """

    ref: str | None
    unsafe: bool
    current: str


def plan_update(dest: Path, vcs_ref: str | None, trust: bool) -> Plan:
    """Check that ``dest`` can be updated and decide the source, version and trust.

    For a project made from the bundled template, this installation's snapshot is imported first;
    the recorded version must still be in the cache and must not be newer than the target.

    Raises:
        CliError: the project cannot be updated; the message says why and what to do.
    """
    src_path, current = recorded_template(dest)
    if not source.is_cache_url(src_path):
        _require_recorded_source(dest, src_path)
        return Plan(ref=vcs_ref, unsafe=trust, current=current)
    bundled = source.bundled_source()
    if not source.has_revision(bundled.repo, current):
        raise CliError(
            f"template version {current}, which generated this project, is missing from the "
            f"template cache {bundled.repo}; run `vip-skeleton check-update` once with "
            f"vip-skeleton {current} installed (e.g. `pipx run vip-skeleton=={current} "
            "check-update`) to restore it, then retry"
        )
    target = vcs_ref or bundled.tag
    old, new = _version(current), _version(target)
    if old is not None and new is not None and old > new:
        raise CliError(
            f"this project uses template {current}, newer than {target}; downgrades are not "
            "supported: upgrade vip-skeleton or pass a newer --vcs-ref"
        )
    return Plan(ref=target, unsafe=False, current=current)


@dataclass(frozen=True)
class UpdateResult:
    """What an update did, or with ``pretend`` would do, to a project.

    Attributes:
        old: the template version that generated the project (as recorded before the update).
        new: the template version recorded after it.
        changes: the files changed, as ``git status --short`` lines (``M`` changed, ``??``
            added, ``D`` deleted, ``UU`` in conflict).
        conflicts: the files to resolve: with conflict markers, or with a ``.rej`` file beside
            them (the ``.rej`` files are listed).
    """

    old: str
    new: str
    changes: list[str]
    conflicts: list[str]


def update_project(
    dest: Path,
    *,
    data: dict[str, Any],
    conflict: Conflict,
    vcs_ref: str | None,
    pretend: bool,
    trust: bool,
) -> UpdateResult:
    """Update the project in ``dest`` with a three-way merge and say what changed.

    Recorded answers are kept unless ``data`` gives new ones; new questions take their defaults.
    With ``pretend``, the update is made in a clone of the project's repository instead and
    ``dest`` is not touched. The update is not committed: the user reviews and tests it first.

    Raises:
        CliError: not a project, not a clean git work tree, a downgrade, or any copier failure.
    """
    dest = dest.resolve()
    read_answers(dest)
    _require_clean_git(dest)
    if pretend:
        top = Path(_git_lines(dest, "rev-parse", "--show-toplevel")[0])
        with tempfile.TemporaryDirectory(prefix="vip-skeleton-pretend-") as tmp:
            clone = Path(tmp) / top.name
            _git_lines(top, "clone", "--quiet", str(top), str(clone))
            trial = clone / dest.relative_to(top)
            return update_project(
                trial, data=data, conflict=conflict, vcs_ref=vcs_ref, pretend=False, trust=trust
            )
    plan = plan_update(dest, vcs_ref, trust)
    with copier_errors():
        copier.run_update(
            dest,
            data=data,
            defaults=True,
            overwrite=True,
            conflict=conflict,
            vcs_ref=plan.ref,
            unsafe=plan.unsafe,
            quiet=True,
        )
    changes = _git_lines(dest, "status", "--short", "--untracked-files=all", "--", ".")
    unmerged = _git_lines(dest, "diff", "--name-only", "--diff-filter=U")
    rejected = [line[3:] for line in changes if line.endswith(".rej")]
    return UpdateResult(
        old=plan.current,
        new=recorded_template(dest)[1],
        changes=changes,
        conflicts=sorted(set(unmerged) | set(rejected)),
    )


@dataclass(frozen=True)
class UpdateStatus:
    """Whether a newer template version is available to a project.

    Attributes:
        current: the version that generated the project.
        latest: the newest version ``update`` would move to.
    """

    current: str
    latest: str

    @property
    def available(self) -> bool:
        """Tell whether ``latest`` is a newer PEP 440 version than ``current``."""
        old, new = _version(self.current), _version(self.latest)
        return old is not None and new is not None and new > old


def check_update(dest: Path) -> UpdateStatus:
    """Compare the project's template version with the newest one ``update`` would use.

    For the bundled template that is this installation's version; for another template, its
    newest PEP 440 tag.

    Raises:
        CliError: not a project, or the template's tags cannot be listed.
    """
    src_path, current = recorded_template(dest)
    if source.is_cache_url(src_path):
        return UpdateStatus(current=current, latest=source.bundled_source().tag)
    _require_recorded_source(dest, src_path)
    try:
        listed = _git_lines(dest, "ls-remote", "--tags", "--refs", _template_url(src_path))
    except CliError as exc:
        raise CliError(f"cannot list the tags of {src_path}: {exc}") from None
    tags = [line.rpartition("refs/tags/")[2] for line in listed]
    versions = sorted(
        (v, t) for t in tags if (v := _version(t)) is not None and not v.is_prerelease
    )
    return UpdateStatus(current=current, latest=versions[-1][1] if versions else current)
