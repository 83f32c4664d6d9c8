"""Template migrations: project changes that a plain three-way merge cannot make.

Copier runs this script during ``copier update --trust`` / ``vip-skeleton update``, once per
``_migrations`` entry of copier.yml whose ``version`` lies in (project's version, target version],
with the project as working directory:

    python hooks/migrations.py VERSION ANSWERS_FILE

Every step is idempotent (running it again changes nothing) and prints one line per change to
standard error. When ``VIP_SKELETON_MIGRATION_LOG`` names a file, each run step appends
``VERSION STEP`` to it, so tests can prove that a step ran exactly once.

To add a migration for release X: write a step function here, register it in ``STEPS["X"]`` and
add the matching ``_migrations`` entry (``version: "X"``) to copier.yml. Migrations are kept
forever; copier picks the ones a project has not passed yet.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path


def rename_socketio_answer(project: Path, answers_file: str) -> list[str]:
    """0.1.0: the pre-release question ``socketio`` became ``socketio_paths``.

    Renames the recorded answer, keeping the user's choice (copier would otherwise ask again or
    silently use the default). Runs in the ``before`` stage, so copier reads the renamed answer.
    """
    path = project / answers_file
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    old = re.compile(r"^socketio:", re.MULTILINE)
    if not old.search(text):
        return []
    if re.search(r"^socketio_paths:", text, re.MULTILINE):
        text = re.sub(r"^socketio:.*\n?", "", text, flags=re.MULTILINE)
        change = f"{answers_file}: dropped the obsolete answer socketio"
    else:
        text = old.sub("socketio_paths:", text)
        change = f"{answers_file}: renamed the answer socketio to socketio_paths"
    path.write_text(text, encoding="utf-8")
    return [change]


#: Steps per template version, in the order they run.
STEPS: dict[str, list[Callable[[Path, str], list[str]]]] = {
    "0.1.0": [rename_socketio_answer],
}


def main(argv: list[str]) -> int:
    """Run the steps registered for ``argv[0]`` (a version) in the current directory."""
    if len(argv) != 2 or argv[0] not in STEPS:
        known = ", ".join(STEPS)
        print(
            f"usage: migrations.py VERSION ANSWERS_FILE (VERSION one of: {known})", file=sys.stderr
        )
        return 2
    version, answers_file = argv
    log = os.environ.get("VIP_SKELETON_MIGRATION_LOG")
    for step in STEPS[version]:
        for change in step(Path.cwd(), answers_file):
            print(f"migration {version}: {change}", file=sys.stderr)
        if log:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{version} {step.__name__}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
