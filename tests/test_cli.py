"""CLI tests through Typer's runner: commands, exit codes, error lines and the ``check`` rules."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from cli_support import FIXTURES, commit_all, isolate, release
from vip_skeleton import __version__, check, source
from vip_skeleton.cli import app

FIXTURE_PROJECT = FIXTURES / "preflight_project"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def run(*args: str) -> Result:
    """Invoke the CLI in-process."""
    return CliRunner().invoke(app, list(args))


def only_error(result: Result) -> str:
    """Return the single ``error:`` line of a failed run (and assert there is no traceback)."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    return isolate(monkeypatch, tmp_path)


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"vip-skeleton {__version__}"


def test_no_arguments_shows_help() -> None:
    result = run()
    assert result.exit_code != 0
    for command in ("new", "update", "check-update", "check"):
        assert command in result.output
    assert result.output.count("Usage:") == 1  # printed once


def test_new_with_data_file_and_data(tmp_path: Path, env: dict[str, str]) -> None:
    data_file = tmp_path / "answers.yml"
    data_file.write_text("project_name: From File\ndefault_port: 4000\n")
    dest = tmp_path / "made"
    result = run(
        "new", str(dest), "--defaults", "--data-file", str(data_file), "-d", "default_port=5000"
    )
    assert result.exit_code == 0, result.output
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert answers["project_name"] == "From File"
    assert answers["default_port"] == 5000
    assert answers["package_name"] == "from_file"
    assert Path(answers["_src_path"]) == Path(env["VIP_SKELETON_CACHE_DIR"]) / "template"
    assert (dest / ".env").is_file()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-d", "package_name=class"], '"class" is a Python keyword'),
        (["-d", "default_port=80"], "The default port must be between 1024 and 65535, not 80"),
        (["-d", "novalue"], "error: --data expects KEY=VALUE, got 'novalue'"),
        (["--data-file", "/nonexistent/answers.yml"], "No such file or directory"),
        (["-d", "redis=maybe"], "error: --data redis='maybe': answer yes, no, true, false, 1 or 0"),
        (["-d", "socketio_paths=nah"], "--data socketio_paths='nah': answer yes, no"),
        (
            ["-d", "default_port=abc"],
            "question 'default_port': The default port must be a whole number from 1024 to 65535,"
            ' not "abc".',
        ),
        (["-d", "nosuch=1"], "error: --data nosuch: no such question (questions: project_name,"),
    ],
)
def test_new_rejects_bad_answers(
    tmp_path: Path, env: dict[str, str], args: list[str], expected: str
) -> None:
    dest = tmp_path / "bad"
    line = only_error(run("new", str(dest), "--defaults", *args))
    assert expected in line
    assert not dest.exists()


@pytest.mark.parametrize(("given", "recorded"), [("yes", True), ("0", False), ("TRUE", True)])
def test_yes_no_answers_are_read_strictly(
    tmp_path: Path, env: dict[str, str], given: str, recorded: bool
) -> None:
    dest = tmp_path / "made"
    result = run("new", str(dest), "--defaults", "-d", f"redis={given}")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((dest / ".copier-answers.yml").read_text())["redis"] is recorded
    assert (dest / "src" / "made" / "redis_broker.py").is_file() is recorded  # named after dest


def test_new_refuses_a_directory_that_holds_files(tmp_path: Path, env: dict[str, str]) -> None:
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    line = only_error(run("new", str(dest), "--defaults"))
    assert line.startswith(f"error: {dest} already exists and is not empty")
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]


def test_new_and_update_name_a_missing_or_file_destination(
    tmp_path: Path, env: dict[str, str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    assert only_error(run("new", str(afile), "--defaults")) == (
        f"error: {afile} is a file; choose a new directory for the project"
    )
    for command in ("update", "check-update"):
        missing = tmp_path / "missing"
        assert only_error(run(command, str(missing))) == f"error: {missing} does not exist"
        line = only_error(run(command, str(afile)))
        assert line == f"error: {afile} is a file, not a project directory"


def test_check_update_names_the_directory_it_looked_at(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    line = only_error(run("check-update"))
    assert line == f"error: {tmp_path} is not a generated project: it has no .copier-answers.yml"


def test_a_dirty_template_is_warned_about(tmp_path: Path, env: dict[str, str]) -> None:
    template = tmp_path / "template"
    source.import_snapshot(release(tmp_path / "r1"), "1.0.0", template)
    (template / "template" / "WIP.md").write_text("not committed\n")

    released = run("new", str(tmp_path / "a"), "--defaults", "--template", str(template))
    assert released.exit_code == 0, released.output
    warned = (
        f"warning: the template {template} has uncommitted changes, which this project will not get"
    )
    assert warned in " ".join(released.output.split())
    assert not (tmp_path / "a" / "WIP.md").exists()

    head = run(
        "new", str(tmp_path / "b"), "--defaults", "--template", str(template), "--vcs-ref", "HEAD"
    )
    assert head.exit_code == 0, head.output
    assert "so `update` will fail on this project; commit them in the template first" in " ".join(
        head.output.split()
    )


def test_update_refuses_a_relative_template_path_with_what_to_do(
    tmp_path: Path, env: dict[str, str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".copier-answers.yml").write_text("_src_path: ../template\n_commit: 1.0.0\n")
    commit_all(project, "Generate")
    line = only_error(run("update", str(project)))
    assert line == (
        f"error: {project / '.copier-answers.yml'} records the relative template path "
        "../template, which copier cannot update from: make its _src_path the template's "
        "absolute path or git URL, commit, and retry"
    )


def test_new_without_a_terminal_needs_defaults(tmp_path: Path, env: dict[str, str]) -> None:
    line = only_error(run("new", str(tmp_path / "p")))
    assert "nteractive" in line


def test_new_from_a_missing_template(tmp_path: Path, env: dict[str, str]) -> None:
    line = only_error(run("new", str(tmp_path / "p"), "--template", str(tmp_path / "nope")))
    assert line.startswith("error: ")


def test_check_update_outside_a_project(tmp_path: Path, env: dict[str, str]) -> None:
    line = only_error(run("check-update", str(tmp_path)))
    assert line == f"error: {tmp_path} is not a generated project: it has no .copier-answers.yml"


def check_json(target: str, *extra: str) -> tuple[int, dict[str, str]]:
    """Run ``check --json``; return the exit code and each rule's status."""
    result = run("check", target, "--json", *extra)
    report = json.loads(result.stdout)
    return result.exit_code, {r["rule"]: r["status"] for r in report["results"]}


def test_check_passes_the_generated_project(tmp_path: Path, env: dict[str, str]) -> None:
    dest = tmp_path / "real"
    assert run("new", str(dest), "--defaults").exit_code == 0
    code, statuses = check_json(str(dest))
    assert code == 0, statuses
    assert list(statuses) == list(check.RULES)
    assert "fail" not in statuses.values()


@pytest.mark.parametrize(
    ("mode", "failing"),
    [
        ("good", set()),
        ("wrong-port", {"port"}),
        ("slow-health", {"health-get", "health-head"}),
        ("no-health", {"health-get", "health-head"}),
        ("ws-anywhere", {"ws-invalid"}),
        ("no-graceful", {"sigterm"}),
    ],
)
def test_check_project_directory(
    monkeypatch: pytest.MonkeyPatch, mode: str, failing: set[str]
) -> None:
    monkeypatch.setenv("FIXTURE_MODE", mode)
    code, statuses = check_json(str(FIXTURE_PROJECT), "--startup-timeout", "10")
    assert list(statuses) == list(check.RULES)
    assert {rule for rule, status in statuses.items() if status == "fail"} == failing
    assert code == (1 if failing else 0)


@pytest.fixture
def running_app(request: pytest.FixtureRequest) -> Iterator[str]:
    """Start the fixture app in the mode given by indirect parametrisation; yield its URL."""
    port = check.free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "FIXTURE_MODE": request.param,
        "PYTHONPATH": str(FIXTURE_PROJECT / "src"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "preflight_fixture"], env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            check.ws_handshake_status(check.Endpoint("127.0.0.1", port), "/", timeout=0.5)
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("running_app", "failing"),
    [
        ("good", set()),
        ("ws-anywhere", {"ws-invalid"}),
        ("no-health", {"health-get", "health-head"}),
    ],
    indirect=["running_app"],
)
def test_check_url(running_app: str, failing: set[str]) -> None:
    code, statuses = check_json(running_app)
    assert {rule for rule, status in statuses.items() if status == "fail"} == failing
    assert list(statuses) == list(check.RULES)
    assert statuses["port"] == statuses["startup"] == statuses["sigterm"] == "skip"
    assert code == (1 if failing else 0)


@pytest.mark.parametrize("running_app", ["good"], indirect=True)
def test_check_table_output(running_app: str) -> None:
    result = run("check", running_app)
    assert result.exit_code == 0
    assert "health-get" in result.stdout
    assert "all rules pass" in result.stdout


@pytest.mark.parametrize("running_app", ["good"], indirect=True)
def test_check_json_gives_each_rule_with_its_requirement(running_app: str) -> None:
    report = json.loads(run("check", running_app, "--json").stdout)
    given = [(r["rule"], r["requirement"]) for r in report["results"]]
    assert given == [(rule.name, rule.requirement) for rule in check.RULES.values()]


def test_the_rules_table_of_the_docs_is_check_rules() -> None:
    """docs/cli.md's table of rules says what ``check.RULES`` says, row for row."""
    expected = [
        "| rule | requirement (pass) | warn | fail |",
        "|---|---|---|---|",
        *(
            f"| `{rule.name}` | {rule.requirement} | {rule.warns} | {rule.fails} |"
            for rule in check.RULES.values()
        ),
    ]
    lines = (DOCS / "cli.md").read_text().splitlines()
    assert expected[0] in lines, "docs/cli.md has no rules table; it should read:\n" + "\n".join(
        expected
    )
    start = lines.index(expected[0])
    documented = lines[start : lines.index("", start)]
    assert documented == expected, "docs/cli.md's rules table should read:\n" + "\n".join(expected)


@pytest.fixture
def hung_server() -> Iterator[str]:
    """A server that accepts every connection and never answers (nor closes); yield its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for conn in held:
        conn.close()


def test_check_on_a_hung_server_fails_each_rule_with_its_reason(hung_server: str) -> None:
    shown: list[str] = []
    report = check.check_url(hung_server, shown.append)
    failed = {r.rule: r.detail for r in report.results if r.status == "fail"}
    probed = ["health-get", "health-head", "home", "ws-valid", "ws-invalid", "ws-plain-get"]
    assert list(failed) == probed, "a timeout is never a pass"
    for rule, detail in failed.items():
        assert f"no answer within {check.PROBE_TIMEOUT_S:.0f} s" in detail, rule
    assert [line.partition(":")[0] for line in shown[1:]] == probed, "progress names each rule"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("https://example.invalid/", "uses TLS; give the app's plain http:// URL"),
        ("http://127.0.0.1:1/", "error: cannot connect to http://127.0.0.1:1"),
        ("no-such-dir", "error: 'no-such-dir' is neither a project directory nor an http:// URL"),
    ],
)
def test_check_target_errors(target: str, expected: str) -> None:
    assert expected in only_error(run("check", target))


def test_check_directory_that_is_not_a_project(tmp_path: Path) -> None:
    line = only_error(run("check", str(tmp_path)))
    assert line.endswith("it has no .copier-answers.yml")


def test_update_help_names_no_option_update_does_not_have() -> None:
    result = run("update", "--help")
    assert result.exit_code == 0
    assert "--template" not in result.output


@pytest.mark.parametrize("command", ["new", "update", "check"])
def test_flags_are_shown_as_flags_in_the_help(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "--help" in result.output
    assert "<bool>" not in result.output  # a flag takes no value


def test_check_on_a_project_that_is_not_installed_says_to_install_it(tmp_path: Path) -> None:
    project = tmp_path / "ghost"
    (project / "src" / "ghost_app").mkdir(parents=True)
    (project / "src" / "ghost_app" / "__init__.py").write_text("")
    (project / "src" / "ghost_app" / "__main__.py").write_text("import not_installed_dependency\n")
    (project / ".copier-answers.yml").write_text("package_name: ghost_app\n")
    line = only_error(run("check", str(project)))
    assert "No module named 'not_installed_dependency'" in line
    assert "install the project first" in line
    assert "R1" not in line
