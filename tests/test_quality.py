"""The CLI, the benchmark and these tests meet the standard asked of generated code."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "--strict", "src/vip_skeleton", "benchmarks"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_repository_code_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_extra_holds_the_build_backend() -> None:
    """The README's install command brings what the wheel-building tests run without isolation."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    test_extra = {
        Requirement(r).name for r in pyproject["project"]["optional-dependencies"]["test"]
    }
    backend = {Requirement(r).name for r in pyproject["build-system"]["requires"]}
    assert backend <= test_extra, f"add {sorted(backend - test_extra)} to the test extra"
