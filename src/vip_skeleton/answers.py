"""The answers file copier records in a generated project, read for ``check`` and ``update``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from vip_skeleton.errors import CliError, one_line

ANSWERS_FILE = ".copier-answers.yml"


def read_answers(dest: Path) -> dict[str, Any]:
    """Return the recorded answers of the project in ``dest``.

    Raises:
        CliError: ``dest`` does not exist, is a file, or has no readable answers file.
    """
    dest = dest.absolute()
    path = dest / ANSWERS_FILE
    if not dest.exists():
        raise CliError(f"{dest} does not exist")
    if not dest.is_dir():
        raise CliError(f"{dest} is a file, not a project directory")
    if not path.is_file():
        raise CliError(f"{dest} is not a generated project: it has no {ANSWERS_FILE}")
    try:
        answers = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"cannot read {path}: {one_line(exc)}") from exc
    if not isinstance(answers, dict):
        raise CliError(f"{path} is not a YAML mapping")
    return answers


def recorded_template(dest: Path) -> tuple[str, str]:
    """Return the template source (``_src_path``) and version (``_commit``) ``dest`` was made from.

    Raises:
        CliError: ``dest`` has no readable answers file, or it records no source or version.
    """
    answers = read_answers(dest)
    src_path = str(answers.get("_src_path") or "")
    commit = str(answers.get("_commit") or "")
    if not src_path or not commit:
        raise CliError(f"{dest / ANSWERS_FILE} does not record _src_path and _commit")
    return src_path, commit
