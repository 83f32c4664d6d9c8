"""The template renders cleanly for every answer, and its validators refuse bad answers."""

from __future__ import annotations

import ast
import importlib.metadata
import keyword
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rendering import render

NON_DEFAULT_ANSWERS: list[dict[str, Any]] = [
    {"project_name": "Live Blog", "package_name": "liveblog_service"},
    {"project_slug": "chat-server-2"},
    {"description": 'Quotes "inside" and an accent: café'},
    {"author_name": "Ada O'Lovelace", "author_email": "ada.lovelace@example.co.uk"},
    {"python_version": "3.11"},
    {"python_version": "3.13"},
    {"default_port": 8080},
    {"socketio_paths": False},
    {"template_updates": False},
    {"socketio_server": True},
    {"redis": True},
    {"redis": True, "package_name": "cluster_app", "socketio_paths": False},
    {"wordpress": False},
]

VALIDATION_CASES: list[tuple[str, Any, str]] = [
    ("project_name", "  ", "The project name must not be empty."),
    ("project_name", "x" * 81, "The project name must be at most 80 characters."),
    ("project_slug", "Realtime_App", "is not kebab-case"),
    ("project_slug", "-app", "is not kebab-case"),
    ("project_slug", "app--two", "is not kebab-case"),
    ("project_slug", "2fast", "is not kebab-case"),
    ("package_name", "Realtime", "is not a valid package name"),
    ("package_name", "9lives", "is not a valid package name"),
    ("package_name", "my-app", "is not a valid package name"),
    ("package_name", "import", "is a Python keyword"),
    ("package_name", "async", "is a Python keyword"),
    ("package_name", "asyncio", "is a standard-library module"),
    ("package_name", "json", "is a standard-library module"),
    ("package_name", "redis", "is a dependency's import name"),
    ("package_name", "socketio", "is a dependency's import name"),
    ("package_name", "aiohttp", "is a dependency's import name"),
    ("package_name", "jwt", "is a dependency's import name"),
    ("package_name", "yarl", "is a dependency's import name"),
    ("description", "", "The description must not be empty."),
    ("description", "two\nlines", "The description must be a single line."),
    ("author_name", " ", "The author name must not be empty."),
    ("author_email", "nobody", "is not an e-mail address"),
    ("author_email", "a@b", "is not an e-mail address"),
    ("author_email", "a b@example.com", "is not an e-mail address"),
    ("default_port", 80, "The default port must be between 1024 and 65535, not 80."),
    ("default_port", 70000, "The default port must be between 1024 and 65535, not 70000."),
    (
        "default_port",
        "abc",
        'The default port must be a whole number from 1024 to 65535, not "abc".',
    ),
    ("default_port", "3000.5", "must be a whole number"),
    ("default_port", "yes", "must be a whole number"),
    ("python_version", "3.10", "3.10"),
]

GOOD_ANSWERS: list[tuple[str, Any]] = [
    ("project_name", "Chat"),
    ("project_slug", "a"),
    ("project_slug", "live-blog-2"),
    ("package_name", "_private_pkg"),
    ("package_name", "asyncio_extras"),
    ("package_name", "redis_app"),
    ("author_email", "first.last+tag@sub.example.org"),
    ("default_port", 1024),
    ("default_port", 65535),
]

LEFTOVER_SYNTAX = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")


def rendered_files(project: Path) -> list[Path]:
    return sorted(p for p in project.rglob("*") if p.is_file() and ".git" not in p.parts)


@pytest.mark.parametrize(("question", "value", "message"), VALIDATION_CASES)
def test_validators_refuse_bad_answers_with_a_readable_message(
    template_snapshot: Path, tmp_path: Path, question: str, value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        render(template_snapshot, tmp_path / "project", **{question: value})
    assert not (tmp_path / "project" / "pyproject.toml").exists()
    # A prompt shows the message on one line, cut at an 80-column terminal's edge.
    shown = str(refused.value).partition(f"question '{question}': ")[2]
    if len(str(value)) <= 12:
        assert len(shown) <= 76, f"{shown!r} ({len(shown)} characters)"


@pytest.mark.parametrize(("question", "value"), GOOD_ANSWERS)
def test_validators_accept_good_answers(
    template_snapshot: Path, tmp_path: Path, question: str, value: Any
) -> None:
    project = render(template_snapshot, tmp_path / "project", **{question: value})
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers[question] == value


@pytest.mark.parametrize(
    "answers", [{}, *NON_DEFAULT_ANSWERS], ids=lambda a: "-".join(a) or "defaults"
)
def test_every_answer_set_renders_without_leftovers(
    template_snapshot: Path, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = render(template_snapshot, tmp_path / "project", **answers)
    files = rendered_files(project)
    assert files
    for path in files:
        assert not path.name.endswith(".jinja"), path
        text = path.read_text(encoding="utf-8")
        if path.parent.name == "workflows":  # GitHub Actions' own ${{ ... }} expressions
            text = re.sub(r"\$\{\{[^{}]*\}\}", "", text)
        if path.suffix != ".js":  # JavaScript template literals use ${...}, not Jinja
            assert not LEFTOVER_SYNTAX.search(text), f"template syntax left in {path}"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    package = recorded["package_name"]
    assert (project / "src" / package / "__main__.py").is_file()
    assert pyproject["project"]["name"] == recorded["project_slug"]
    assert pyproject["project"]["scripts"] == {recorded["project_slug"]: f"{package}.__main__:main"}
    assert pyproject["tool"]["mypy"]["python_version"] == recorded["python_version"]
    settings = (project / "src" / package / "settings.py").read_text()
    assert f"DEFAULT_PORT = {recorded['default_port']}\n" in settings
    assert ('"/socket.io/"' in settings) is recorded["socketio_paths"]
    assert_socketio_only_when_asked(project, package, recorded["socketio_server"])
    assert_redis_only_when_asked(project, package, recorded["redis"])
    for key, value in answers.items():
        assert recorded[key] == value


def assert_socketio_only_when_asked(project: Path, package: str, socketio_server: bool) -> None:
    """python-socketio, its module, tests and client exist with socketio_server=yes only."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    dependencies = [Requirement(r).name for r in pyproject["project"]["dependencies"]]
    assert ("python-socketio" in dependencies) is socketio_server
    # Pinned: socketio_server.py relies on python-engineio's private AsyncServer._async.
    assert ("python-engineio" in dependencies) is socketio_server
    assert (project / "src" / package / "socketio_server.py").is_file() is socketio_server
    assert (project / "src" / package / "static" / "socket.io.min.js").is_file() is socketio_server
    assert (project / "tests" / "test_socketio.py").is_file() is socketio_server
    page = (project / "src" / package / "static" / "index.html").read_text()
    assert ("socket.io.min.js" in page) is socketio_server


def test_socketio_server_needs_the_socketio_paths(template_snapshot: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("answer yes to socketio_paths too, or no here")):
        render(template_snapshot, tmp_path / "project", socketio_server=True, socketio_paths=False)
    assert not (tmp_path / "project" / "pyproject.toml").exists()


def assert_redis_only_when_asked(project: Path, package: str, redis: bool) -> None:
    """The Redis module, tests and dependency exist with redis=yes; no Redis code without it."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    has_dependency = any(dep.startswith("redis") for dep in pyproject["project"]["dependencies"])
    assert has_dependency is redis
    assert (project / "src" / package / "redis_broker.py").is_file() is redis
    assert (project / "tests" / "test_redis.py").is_file() is redis
    assert (project / "tests" / "test_publish.py").is_file()
    code = [*(project / "src").rglob("*.py"), *(project / "tests").rglob("*.py")]
    mentions = [path.name for path in code if "redis" in path.read_text().lower()]
    if not redis:
        assert mentions == []
    # What only Redis needs lives in files of its own: app.py and settings.py never mention it.
    assert "app.py" not in mentions
    assert "settings.py" not in mentions
    # No server-side scripts: the platform's Redis documentation warns against them.
    source = "\n".join(path.read_text() for path in (project / "src").rglob("*.py"))
    assert not re.search(r"register_script|\.eval(sha)?\(|\bfcall|script_load", source)


def test_every_test_named_in_the_security_table_exists(
    template_snapshot: Path, tmp_path: Path
) -> None:
    project = render(template_snapshot, tmp_path / "project")
    table = (project / "docs" / "security.md").read_text()
    named = set(re.findall(r"\b(test_\w+?)(?:\*|\[|`)", table)) - {"test_allowance_"}
    defined = {
        name
        for path in (project / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    assert len(named) > 20
    assert named <= defined, sorted(named - defined)


def test_the_test_extra_runs_the_rendered_app(template_snapshot: Path, tmp_path: Path) -> None:
    """Tests run the rendered app with this interpreter: its dependencies are in the test extra."""
    project = render(template_snapshot, tmp_path / "project")
    needed = {
        Requirement(r).name
        for r in tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    } - {"uvloop"}  # optional: the app falls back to asyncio's own loop
    root = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    extra = {Requirement(r).name for r in root["project"]["optional-dependencies"]["test"]}
    assert needed <= extra, f"add {sorted(needed - extra)} to the test extra"


def asked_questions() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((Path(__file__).parent.parent / "copier.yml").read_text())
    return {
        name: spec
        for name, spec in config.items()
        if not name.startswith("_") and spec.get("when") is not False
    }


def test_every_prompt_fits_an_80_column_terminal() -> None:
    for name, spec in asked_questions().items():
        for line in spec["help"].splitlines():
            assert len(line) <= 76, f"{name}: {line!r} ({len(line)} characters)"


@pytest.mark.parametrize("package", ["aaa_app", "zzz_app"])
def test_imports_stay_sorted_whatever_the_package_is_named(
    template_snapshot: Path, tmp_path: Path, package: str
) -> None:
    """The tests' own helpers sort after the package, before it or after it alphabetically."""
    project = render(template_snapshot, tmp_path / "project", package_name=package, redis=True)
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "I", "."],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_the_lookup_tables_cover_this_python() -> None:
    """A package may not be named after any keyword or standard-library module of this Python."""
    questions = yaml.safe_load((Path(__file__).parent.parent / "copier.yml").read_text())
    keywords = set(questions["python_keywords"]["default"].split())
    modules = set(questions["stdlib_module_names"]["default"].split())
    assert set(keyword.kwlist) | set(keyword.softkwlist) <= keywords
    assert set(sys.stdlib_module_names) <= modules, sorted(set(sys.stdlib_module_names) - modules)


def test_the_lookup_table_covers_the_dependencies(template_snapshot: Path, tmp_path: Path) -> None:
    """A package may not be named after what ``pip install -e '.[test]'`` brings into a project
    rendered with every option: its dependencies and the test extra's (their import names, as
    installed here), and what its dependencies need at run time."""
    project = render(template_snapshot, tmp_path / "project", redis=True, socketio_server=True)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    direct = [Requirement(r) for r in pyproject["dependencies"]]
    tests = [Requirement(r) for r in pyproject["optional-dependencies"]["test"]]
    installed: dict[str, set[str]] = {}
    for name, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            installed.setdefault(canonicalize_name(distribution), set()).add(name)

    def import_names(requirement: Requirement) -> set[str]:
        # A dependency missing here (uvloop) is imported under its own name.
        found = installed.get(canonicalize_name(requirement.name), set())
        names = found or {canonicalize_name(requirement.name).replace("-", "_")}
        return {n for n in names if re.fullmatch("[a-z_][a-z0-9_]*", n)}

    needed = set().union(*map(import_names, direct + tests))
    todo, seen = list(direct), set()
    while todo:  # what the dependencies need at run time, as far as it is installed here
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or name not in installed:
            continue
        seen.add(name)
        needed |= import_names(requirement)
        for line in importlib.metadata.requires(name) or []:
            nested = Requirement(line)
            if nested.marker is None or nested.marker.evaluate({"extra": ""}):
                todo.append(nested)
    questions = yaml.safe_load((Path(__file__).parent.parent / "copier.yml").read_text())
    table = set(questions["dependency_import_names"]["default"].split())
    assert needed <= table, f"add {sorted(needed - table)} to dependency_import_names"


def test_every_question_is_in_the_readme_table() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = {cell for line in readme.splitlines() if line.startswith("| `") for cell in
            re.findall(r"`(\w+)`", line.split("|")[1])}  # fmt: skip
    assert set(asked_questions()) <= rows, sorted(set(asked_questions()) - rows)


def test_redis_question_is_last_and_off_by_default() -> None:
    questions = yaml.safe_load((Path(__file__).parent.parent / "copier.yml").read_text())
    asked = [
        k for k, v in questions.items() if not k.startswith("_") and v.get("when") is not False
    ]
    assert asked[-1] == "redis"
    assert questions["redis"]["type"] == "bool"
    assert questions["redis"]["default"] is False
    assert questions["redis"]["help"]


def test_answers_file_records_answers_but_not_lookup_tables(
    template_snapshot: Path, tmp_path: Path
) -> None:
    project = render(template_snapshot, tmp_path / "project")
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert recorded["_src_path"] == str(template_snapshot)
    assert "stdlib_module_names" not in recorded
    assert "python_keywords" not in recorded
    assert "dependency_import_names" not in recorded
    assert recorded["project_slug"] == "project"  # the destination folder's name
    assert recorded["package_name"] == "project"


@pytest.mark.parametrize(
    ("folder", "name", "slug", "package"),
    [
        ("my-app", "My App", "my-app", "my_app"),
        ("Live_Blog 2", "Live Blog 2", "live-blog-2", "live_blog_2"),
        ("2024-app", "Realtime App", "realtime-app", "realtime_app"),  # no package starts so
        ("class", "Realtime App", "realtime-app", "realtime_app"),  # a keyword
        ("json", "Realtime App", "realtime-app", "realtime_app"),  # a standard-library module
        ("redis", "Realtime App", "realtime-app", "realtime_app"),  # a dependency's import name
    ],
)
def test_the_names_default_to_the_destination_folder(
    template_snapshot: Path, tmp_path: Path, folder: str, name: str, slug: str, package: str
) -> None:
    project = render(template_snapshot, tmp_path / folder)
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert (recorded["project_name"], recorded["project_slug"]) == (name, slug)
    assert recorded["package_name"] == package
    assert (project / "src" / package / "__main__.py").is_file()
    assert f"python -m {package}" in (project / "README.md").read_text()


def test_copy_needs_no_trust(template_snapshot: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "copier",
            "copy",
            "--defaults",
            "--vcs-ref",
            "HEAD",
            "--quiet",
            str(template_snapshot),
            str(tmp_path / "project"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "project" / "pyproject.toml").is_file()


# The slowest tests: a fresh virtualenv per answer set, then the project's own tools and suite.
SUITE_ANSWERS = [
    {},
    {
        "project_name": "Live Blog",
        "package_name": "liveblog_service",
        "python_version": "3.13",
        "default_port": 8080,
        "socketio_paths": False,
        "redis": True,
        "wordpress": False,  # its tests run in the defaults, and in tests/test_wordpress.py
    },
    {"package_name": "socketio_app", "socketio_server": True, "wordpress": False},
]


@pytest.mark.slow
@pytest.mark.parametrize("answers", SUITE_ANSWERS, ids=["defaults", "non-defaults", "socketio"])
def test_rendered_project_passes_its_own_checks_in_a_fresh_virtualenv(
    template_snapshot: Path, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = render(template_snapshot, tmp_path / "project", **answers)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")

    def run(*args: str) -> None:
        result = subprocess.run(
            args, cwd=project, capture_output=True, text=True, check=False, timeout=600
        )
        assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"

    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", ".[test]")
    shutil.rmtree(project / "build", ignore_errors=True)
    run(python, "-m", "ruff", "check", ".")
    run(python, "-m", "ruff", "format", "--check", ".")
    run(python, "-m", "mypy")
    run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider")


def defined_names(package: Path) -> set[str]:
    """What the package's modules define: functions, classes and constants, and
    ``Class.member``."""
    names: set[str] = set()
    for module in package.rglob("*.py"):
        for node in ast.parse(module.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {target.id for target in targets if isinstance(target, ast.Name)}
            if isinstance(node, ast.ClassDef):
                names |= {
                    f"{node.name}.{member.name}"
                    for member in node.body
                    if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef)
                }
    return names


@pytest.mark.parametrize(
    "answers",
    [{}, {"socketio_server": True}, {"redis": True}],
    ids=["defaults", "socketio_server", "redis"],
)
def test_every_name_in_the_readme_rule_table_exists(
    template_snapshot: Path, tmp_path: Path, answers: dict[str, Any]
) -> None:
    """The "where" column of the README's platform rules names files and code of the render."""
    project = render(template_snapshot, tmp_path / "project", **answers)
    package = project / "src" / "project"
    readme = (project / "README.md").read_text()
    table = readme.partition("## How it meets the platform's rules")[2].partition("\n## ")[0]
    rows = [line.split("|")[2] for line in table.splitlines() if line.startswith("| ")][1:]
    cited = {name for row in rows for name in re.findall(r"`([^`]+)`", row)}
    assert cited
    files = {name for name in cited if re.search(r"\.(py|js)$", name)}
    missing = {name for name in files if not (package / name).is_file()}
    code = {name.removesuffix("()") for name in cited - files}
    missing |= code - defined_names(package)
    assert not missing, f"the README's rule table names what the render lacks: {sorted(missing)}"


def imported_siblings(module: Path) -> set[str]:
    """The modules of its own package that ``module`` imports (``from .x import ...``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module} if node.module else {alias.name for alias in node.names}
    return names


@pytest.mark.parametrize(
    "answers",
    [{}, {"socketio_server": True}, {"redis": True}],
    ids=["defaults", "socketio_server", "redis"],
)
def test_the_architecture_page_names_every_module_and_its_imports(
    template_snapshot: Path, tmp_path: Path, answers: dict[str, Any]
) -> None:
    """docs/architecture.md's table has a row per module, with exactly the modules it imports."""
    project = render(template_snapshot, tmp_path / "project", **answers)
    package = project / "src" / "project"
    page = (project / "docs" / "architecture.md").read_text()
    table = page.partition("## The modules, and which imports which")[2].partition("\n## ")[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| `")]
    documented = {
        module.strip().strip("`").removesuffix(".py"): set(re.findall(r"`(\w+)`", imports))
        for module, imports in rows
    }
    actual = {
        module.stem: imported_siblings(module)
        for module in package.glob("*.py")
        if module.name != "__init__.py"
    }
    assert documented == actual
