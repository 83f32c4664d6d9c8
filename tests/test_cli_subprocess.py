"""The CLI as a real process: from this checkout, and from built wheels installed in a virtualenv.

The wheel test is the end-to-end proof of the offline story: release A's wheel generates a
project with no network and no git remote; release B's wheel, installed over it, updates that
project with a real three-way merge, run from another directory.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cli_support import ROOT, commit_all, subprocess_env
from rendering import git
from vip_skeleton import __version__


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m vip_skeleton`` from this checkout."""
    return subprocess.run(
        [sys.executable, "-m", "vip_skeleton", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    settings = tmp_path / "copier-settings.yml"
    settings.write_text("defaults: {}\n")
    return subprocess_env(
        {
            "VIP_SKELETON_CACHE_DIR": str(tmp_path / "cache"),
            "COPIER_SETTINGS_PATH": str(settings),
        }
    )


def test_version(env: dict[str, str], tmp_path: Path) -> None:
    done = cli("--version", env=env, cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout == f"vip-skeleton {__version__}\n"


def test_new_then_errors_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    made = cli("new", "proj", "--defaults", env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "proj" / "pyproject.toml").is_file()
    for args, code, expected in [
        (["new", "bad", "--defaults", "-d", "package_name=1x"], 1, "is not a valid package name"),
        (["new", "bad", "--defaults", "-d", "default_port=x"], 1, "must be a whole number"),
        (["new", "bad", "-d", "project_name=X"], 1, "nteractive"),
        (["update", "proj"], 1, "is not a git repository"),
        (["check-update", "."], 1, "is not a generated project"),
        (
            ["check", "ftp://example.invalid/"],
            1,
            "is neither a project directory nor an http:// URL",
        ),
        (["update", "proj", "--conflict", "bogus"], 2, "Invalid value for '--conflict'"),
        (["frobnicate"], 2, "No such command 'frobnicate'"),
    ]:
        done = cli(*args, env=env, cwd=tmp_path)
        assert done.returncode == code, (args, done.stderr)
        assert "Traceback" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, (args, done.stderr)
        assert expected in errors[0]
    assert not (tmp_path / "bad").exists()


def test_check_update_exit_code(env: dict[str, str], tmp_path: Path) -> None:
    assert cli("new", "proj", "--defaults", env=env, cwd=tmp_path).returncode == 0
    done = cli("check-update", "proj", env=env, cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("up to date")


class Terminal:
    """A process on a pseudo-terminal, driven like a person would (expect and type)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.fd, child = os.openpty()
        term = {**env, "TERM": "xterm", "COLUMNS": "120", "LINES": "40"}
        self.proc = subprocess.Popen(
            args, stdin=child, stdout=child, stderr=child, env=term, cwd=cwd, close_fds=True
        )
        os.close(child)
        self.screen = ""

    def _read(self, timeout: float) -> bool:
        """Read what the process wrote within ``timeout``; False once it is silent or gone."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # the process closed the terminal
            return False
        self.screen += re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", chunk.decode(errors="replace"))
        return bool(chunk)

    def expect(self, text: str, timeout: float = 30) -> None:
        """Wait until ``text`` has appeared on the screen."""
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            assert time.monotonic() < deadline, f"{text!r} never appeared:\n{self.screen}"
            self._read(0.2)

    def type(self, keys: str) -> None:
        """Type ``keys`` (use \\r for Enter)."""
        os.write(self.fd, keys.encode())

    def accept_rest(self, timeout: float = 60) -> int:
        """Press Enter whenever the process waits quietly, until it exits; return its status."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, self.screen
            if not self._read(0.5) and self.proc.poll() is None:
                self.type("\r")
        while self._read(0.1):
            pass
        os.close(self.fd)
        return self.proc.wait()


def test_new_prompts_on_a_terminal(env: dict[str, str], tmp_path: Path) -> None:
    """Copier's own prompts and validators, answered on a terminal."""
    term = Terminal([sys.executable, "-m", "vip_skeleton", "new", "typed"], env, tmp_path)
    term.expect("Project name")
    term.type(" X\r")  # appended to the proposed default
    term.expect("Project slug")
    term.type("_\r")  # not kebab-case: the validator refuses it
    term.expect("Validation error for question 'project_slug'")
    term.type("\x7f\r")  # Backspace, then accept
    assert term.accept_rest() == 0, term.screen
    answers = yaml.safe_load((tmp_path / "typed" / ".copier-answers.yml").read_text())
    assert answers["project_name"] == "Typed X"  # the folder's name, then what was typed
    assert answers["project_slug"] == "typed-x"
    assert answers["package_name"] == "typed_x"


@pytest.mark.parametrize("at", ["Project name", "Project slug"])
def test_ctrl_c_at_a_prompt_is_one_line_and_exit_130(
    env: dict[str, str], tmp_path: Path, at: str
) -> None:
    term = Terminal([sys.executable, "-m", "vip_skeleton", "new", "stopped"], env, tmp_path)
    term.expect("Project name")
    if at == "Project slug":
        term.type("\r")
        term.expect("Project slug")
    term.type("\x03")
    status = term.proc.wait(timeout=30)
    while term._read(0.2):
        pass
    os.close(term.fd)
    assert status == 130, term.screen
    after = term.screen.split(at)[-1]
    errors = [line for line in after.splitlines() if line.strip().startswith("error:")]
    assert errors == ["error: interrupted"], term.screen
    assert len(after) < 500, after  # no answers map, no validator source
    assert not (tmp_path / "stopped").exists()


def build_release(tmp_path: Path, name: str, version: str | None, extra_ignore: str) -> Path:
    """Build a wheel of this checkout into ``tmp_path/name``, optionally as another release.

    ``version`` replaces the project version; ``extra_ignore`` is appended to the template's
    .gitignore (a template change a next release could make).
    """
    tree = tmp_path / f"{name}-src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for part in ("src", "template"):
        shutil.copytree(ROOT / part, tree / part, ignore=ignore)
    for part in ("copier.yml", "pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / part).exists():
            shutil.copy2(ROOT / part, tree / part)
    if not (tree / "README.md").exists():
        (tree / "README.md").write_text("vip-skeleton\n")
    if version is not None:
        pyproject = tree / "pyproject.toml"
        text = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text())
        pyproject.write_text(text)
    if extra_ignore:
        with (tree / "template" / ".gitignore").open("a") as fh:
            fh.write(extra_ignore)
    out = tmp_path / name
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(tree)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    [wheel] = out.glob("vip_skeleton-*.whl")
    return wheel


def test_offline_new_and_update_from_installed_wheels(tmp_path: Path) -> None:
    wheel_a = build_release(tmp_path, "release-a", None, "")
    wheel_b = build_release(tmp_path, "release-b", "999.0.0", "# release B\n*.tmp\n")
    version_a = wheel_a.name.split("-")[1]
    venv = tmp_path / "venv"
    # The fresh virtualenv borrows the test environment's installed dependencies (a path in a .pth
    # file, so that environment's own editable vip-skeleton stays out); vip-skeleton itself comes
    # only from the wheels, with the package index switched off.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    [site_packages] = venv.glob("lib/python*/site-packages")
    (site_packages / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index"]
    subprocess.run([*pip, "--no-deps", str(wheel_a)], check=True, timeout=300)
    home = tmp_path / "home"
    home.mkdir()
    (home / "copier-settings.yml").write_text("defaults: {}\n")
    gitconfig = home / ".gitconfig"
    gitconfig.write_text("[user]\n\tname = Test\n\temail = test@example.com\n")
    offline = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "COPIER_SETTINGS_PATH": str(home / "copier-settings.yml"),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_ALLOW_PROTOCOL": "file",  # git may not reach any remote
        "PIP_NO_INDEX": "1",
        "http_proxy": "http://127.0.0.1:9",  # any HTTP attempt fails fast
        "https_proxy": "http://127.0.0.1:9",
    }
    tool = str(venv / "bin" / "vip-skeleton")

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool, *args], cwd=cwd, env=offline, capture_output=True, text=True, timeout=300
        )

    made = run("new", "proj", "--defaults", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "proj"
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == "~/.cache/vip-skeleton/template"
    assert answers["_commit"] == version_a
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nMy own notes.\n")
    commit_all(project, "Generate and edit")

    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(wheel_b)], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pending = run("check-update", str(project), cwd=elsewhere)
    assert pending.returncode == 2, pending.stderr
    assert f"template 999.0.0 is available; this project uses {version_a}" in pending.stdout
    updated = run("update", str(project), cwd=elsewhere)
    assert updated.returncode == 0, updated.stderr

    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "999.0.0"
    assert "# release B\n*.tmp\n" in (project / ".gitignore").read_text()
    assert readme.read_text().endswith("\nMy own notes.\n")
    tags = git(home / ".cache" / "vip-skeleton" / "template", "tag").split()
    assert sorted(tags) == sorted([version_a, "999.0.0"])


def test_a_port_typed_as_words_is_refused_in_words(env: dict[str, str], tmp_path: Path) -> None:
    answered = [
        f"{key}={value}"
        for key, value in {
            "project_name": "Ported",
            "project_slug": "ported",
            "package_name": "ported",
            "description": "d",
            "author_name": "a",
            "author_email": "a@example.com",
            "python_version": "3.12",
        }.items()
    ]
    args = [sys.executable, "-m", "vip_skeleton", "new", "ported"]
    args += [arg for pair in answered for arg in ("-d", pair)]
    term = Terminal(args, env, tmp_path)
    term.expect("Default port")
    term.type("abc\r")  # after the proposed 3000: "3000abc"
    term.expect("Validation error for question 'default_port': The default port must be a whole")
    term.type("\x03")  # Ctrl-C: nothing is generated
    assert term.proc.wait(30) == 130
    assert not (tmp_path / "ported").exists()
