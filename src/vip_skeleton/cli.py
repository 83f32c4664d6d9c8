"""The ``vip-skeleton`` command line: generate, update and preflight-check projects.

Every failure is printed as one ``error: ...`` line on standard error with a non-zero exit code;
set ``VIP_SKELETON_DEBUG=1`` to get a traceback for an unexpected one instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vip_skeleton import __version__, check, project, source
from vip_skeleton.errors import CliError, one_line

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """Print ``error: <message>`` on standard error, the message as it is (no console markup)."""
    err.print("[red]error:[/red]", escape(message), soft_wrap=True)


class OneLineErrorsTyper(typer.Typer):
    """A Typer app whose usage errors, like every other error, are one ``error:`` line.

    Errors inside a command's body are reported by ``reported``; this reports what click raises
    outside it (an unknown option, a bad value, an abort), which ``reported`` never sees.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Run the CLI and exit; report a usage error as one line with its exit code (2)."""
        kwargs["standalone_mode"] = False
        try:
            result = super().__call__(*args, **kwargs)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        except Exception as exc:
            # Click's exceptions (vendored by newer Typer releases, so matched by shape).
            message = getattr(exc, "format_message", None)
            code = getattr(exc, "exit_code", None)
            if message is None or not isinstance(code, int):
                raise
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":
                sys.exit(code)  # Typer has printed the help already
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            print_error(f"{message()}{where}")
            sys.exit(code)
        sys.exit(result if isinstance(result, int) else 0)


app = OneLineErrorsTyper(
    name="vip-skeleton",
    help="Generate, update and preflight-check Python real-time apps for VIP-style platforms.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Docstring lines wrapped in the source are joined into paragraphs, not shown as broken.
    rich_markup_mode="markdown",
)

DataOption = Annotated[
    list[str] | None,
    typer.Option("--data", "-d", metavar="KEY=VALUE", help="Answer a question (repeatable)."),
]
DataFileOption = Annotated[
    Path | None,
    typer.Option("--data-file", help="YAML file of answers; --data wins over it.", dir_okay=False),
]
VcsRefOption = Annotated[
    str | None, typer.Option("--vcs-ref", help="Template git ref (tag, branch or commit) to use.")
]
TrustOption = Annotated[
    bool,
    typer.Option(
        "--trust", help="Allow a --template's tasks and migrations (the bundled one has none)."
    ),
]
UpdateTrustOption = Annotated[
    bool,
    typer.Option(
        "--trust",
        help="Allow the tasks and migrations of a template other than vip-skeleton's own.",
    ),
]


@contextmanager
def reported() -> Iterator[None]:
    """Turn every failure into one ``error:`` line and a non-zero exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except CliError as exc:
        print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print_error("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        if os.environ.get("VIP_SKELETON_DEBUG"):
            raise
        print_error(
            f"unexpected {type(exc).__name__}: {one_line(exc)} "
            "(VIP_SKELETON_DEBUG=1 shows a traceback)"
        )
        raise typer.Exit(1) from None


def _version(value: bool) -> None:
    if value:
        out.print(f"vip-skeleton {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Generate, update and preflight-check Python real-time apps for VIP-style platforms."""


@app.command()
def new(
    dest: Annotated[Path, typer.Argument(help="Directory to create the project in.")],
    defaults: Annotated[
        bool,
        typer.Option("--defaults", help="Use defaults for every question not given with --data."),
    ] = False,
    data: DataOption = None,
    data_file: DataFileOption = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template", help="Template source (path or git URL) instead of the bundled one."
        ),
    ] = None,
    vcs_ref: VcsRefOption = None,
    trust: TrustOption = False,
) -> None:
    """Generate a project in DEST, asking copier's questions (works offline)."""
    with reported():
        answers = project.parse_data(data or [], data_file)
        if template is None or Path(template, "copier.yml").is_file():
            questions = Path(template or source.bundled_snapshot(), "copier.yml")
            answers = project.check_data(answers, questions)
        for warning in project.template_warnings(template, vcs_ref) if template else []:
            err.print("[yellow]warning:[/yellow]", escape(warning), soft_wrap=True)
        project.new_project(
            dest.absolute(),
            data=answers,
            defaults=defaults,
            template=template,
            vcs_ref=vcs_ref,
            trust=trust,
        )


@app.command()
def update(
    dest: Annotated[Path, typer.Argument(help="The project to update.")] = Path(),
    conflict: Annotated[
        project.Conflict,
        typer.Option(
            "--conflict", help="inline: conflict markers in the file; rej: a .rej file beside it."
        ),
    ] = "inline",
    vcs_ref: VcsRefOption = None,
    pretend: Annotated[
        bool,
        typer.Option(
            "--pretend", help="List the files the update would change (in a clone); write nothing."
        ),
    ] = False,
    data: DataOption = None,
    data_file: DataFileOption = None,
    trust: UpdateTrustOption = False,
) -> None:
    """Merge the newest template (or --vcs-ref) into DEST, keeping the project's own changes.

    DEST must be a git work tree without uncommitted changes. Recorded answers are kept unless
    --data gives new ones.
    """
    with reported():
        answers = project.check_data(
            project.parse_data(data or [], data_file), source.bundled_snapshot() / "copier.yml"
        )
        result = project.update_project(
            dest,
            data=answers,
            conflict=conflict,
            vcs_ref=vcs_ref,
            pretend=pretend,
            trust=trust,
        )
        if pretend:
            # git's short status: M changed, ?? added, D deleted, UU in conflict.
            out.print(
                "\n".join(result.changes) or "nothing would change", markup=False, soft_wrap=True
            )
        else:
            _report_update(result, conflict)


def _report_update(result: project.UpdateResult, conflict: project.Conflict) -> None:
    """Print what an update changed and what the user does next (review, test, commit)."""
    if not result.changes:
        out.print(f"Template {result.new}: nothing changed.", markup=False, soft_wrap=True)
        return
    moved = f"from {result.old} to {result.new}" if result.old != result.new else result.new
    out.print(
        f"Updated the template {moved}; {len(result.changes)} "
        f"{'file' if len(result.changes) == 1 else 'files'} changed "
        "(M changed, ?? added, D deleted, UU in conflict):",
        markup=False,
        soft_wrap=True,
    )
    out.print(
        "\n".join(f"  {line}" for line in result.changes),
        markup=False,
        soft_wrap=True,
    )
    if result.conflicts:
        how = (
            "keep what you need of both sides and delete the <<<<<<< ======= >>>>>>> markers"
            if conflict == "inline"
            else "each .rej file holds your lines that the template's version replaced: merge "
            "them by hand, then delete the .rej files"
        )
        err.print(
            "[yellow]warning:[/yellow] resolve the conflicts in "
            f"{escape(', '.join(result.conflicts))} before committing: {how}",
            soft_wrap=True,
        )
    out.print(
        "Next steps:\n"
        "  1. review:  git diff   (and the template's CHANGELOG.md for these versions)\n"
        "  2. test:    pytest\n"
        f'  3. commit:  git add -A && git commit -m "Update template to {result.new}"',
        markup=False,
        soft_wrap=True,
    )


@app.command("check-update")
def check_update(
    dest: Annotated[Path, typer.Argument(help="The project to look at.")] = Path(),
) -> None:
    """Say whether a newer template version exists (exit code 2 when one does)."""
    with reported():
        status = project.check_update(dest)
        if status.available:
            out.print(f"template {status.latest} is available; this project uses {status.current}")
            raise typer.Exit(2)
        out.print(f"up to date: this project uses template {status.current}")


def _render(report: check.Report) -> None:
    styles = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
    table = Table(title=f"vip-skeleton check {report.target} ({report.url})")
    table.add_column("rule")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for r in report.results:
        table.add_row(r.rule, f"[{styles[r.status]}]{r.status}[/]", r.detail)
    out.print(table)
    verdict = "[green]all rules pass[/]" if report.ok else "[red]some rules fail[/]"
    out.print(verdict)


@app.command("check")
def check_command(
    target: Annotated[str, typer.Argument(help="URL of a running app, or a project directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    startup_timeout: Annotated[
        float,
        typer.Option(
            "--startup-timeout",
            min=0.5,
            help="Seconds a project's app gets to listen on PORT.",
        ),
    ] = check.READY_TIMEOUT_S,
) -> None:
    """Preflight-check the platform's rules; exit code 1 when any rule fails.

    For a project directory the app is started with its own interpreter on a random PORT, and
    SIGTERM handling is checked last.
    """
    with reported():
        with err.status("checking", spinner="dots") as status:
            progress: Callable[[str], None] = lambda text: status.update(text)  # noqa: E731
            if Path(target).is_dir():
                report = check.check_project(Path(target).absolute(), progress, startup_timeout)
            else:
                report = check.check_url(target, progress)
        if as_json:
            typer.echo(json.dumps(report.as_json(), indent=2))
        else:
            _render(report)
    if not report.ok:
        raise typer.Exit(1)
