"""The ``ckptlint`` command: thin — parse options, call the Python API, pick a reporter, set the exit code.

Only click is imported at module level so ``ckptlint --version`` starts fast; every command
imports what it needs when it runs.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from ckptlint import __version__

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
FAIL_ON = ("error", "warning", "info", "never")


class _State:
    debug = False


def _die(message: str) -> NoReturn:
    """Exit 2 with exactly one line on stderr."""
    one_line = " ".join(message.split())
    click.echo(f"ckptlint: error: {one_line}", err=True)
    sys.exit(EXIT_ERROR)


def _emit(text: str, output: str | None) -> None:
    if output:
        from ckptlint.outfile import write_atomic

        write_atomic(output, text)
    else:
        click.echo(text, nl=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="ckptlint")
@click.option("--debug", is_flag=True, help="Show a traceback for errors (for bug reports).")
def cli(debug: bool) -> None:
    """Checkpoint compatibility linter: find why weights will not load, or load wrong."""
    _State.debug = debug


@cli.command()
@click.argument("path")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--depth", type=click.IntRange(min=1), default=None, help="Collapse the tree below N levels.")
@click.option(
    "--filter", "pattern", default=None, help="Only keys matching this glob, e.g. '*/pos_embedding'."
)
@click.option("--output", "-o", default=None, help="Write to FILE instead of stdout.")
def dump(path: str, fmt: str, depth: int | None, pattern: str | None, output: str | None) -> None:
    """Print the parameter tree of a checkpoint (header-only; never executes it)."""
    from ckptlint.layout import detect_layout
    from ckptlint.readers import read_checkpoint

    ckpt = read_checkpoint(path)
    layout = detect_layout(ckpt).name
    if fmt == "json":
        from ckptlint.report import dump_json

        _emit(dump_json.render(ckpt, layout), output)
    else:
        from ckptlint.report import dump_text

        _emit(dump_text.render(ckpt, layout, depth=depth, pattern=pattern), output)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--arch", default=None, help="Expected architecture NAME[:VARIANT] (see `ckptlint archs`).")
@click.option(
    "--model", default=None, help="Live model definition MODULE:FACTORY (built on the meta device)."
)
@click.option("--spec", default=None, help="Expectation from a `ckptlint dump --format json` file.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sarif", "markdown", "github"]),
    default="text",
    show_default=True,
)
@click.option("--output", "-o", default=None, help="Write the report to FILE.")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="error", show_default=True)
@click.option("--select", default=None, help="Comma-separated codes or prefixes to report (e.g. CK1,CK201).")
@click.option("--ignore", default=None, help="Comma-separated codes or prefixes to drop.")
@click.option("--verbose", "-v", is_flag=True, help="Show every raw missing/unexpected/mismatched key.")
def check(
    paths: tuple[str, ...],
    arch: str | None,
    model: str | None,
    spec: str | None,
    fmt: str,
    output: str | None,
    fail_on: str,
    select: str | None,
    ignore: str | None,
    verbose: bool,
) -> None:
    """Check checkpoints against an architecture and explain the root cause of every problem."""
    if sum(x is not None for x in (arch, model, spec)) > 1:
        raise click.UsageError("give at most one of --arch, --model, --spec")
    from ckptlint.api import check as run_check

    report = run_check(
        list(paths), arch=arch, model=model, spec=spec, select=_codes(select), ignore=_codes(ignore)
    )
    from ckptlint.report import render

    _emit(render(report, fmt, verbose=verbose, fail_on=fail_on), output)
    unreadable = [f for f in report.files if f.error]
    if unreadable and len(report.files) == 1:
        _die(f"{unreadable[0].path}: {unreadable[0].error}")
    sys.exit(_exit_code(report, fail_on, unreadable=bool(unreadable)))


def _codes(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [c.strip().upper() for c in value.split(",") if c.strip()]


def _exit_code(report: Any, fail_on: str, unreadable: bool) -> int:
    if unreadable:
        return EXIT_ERROR
    if fail_on == "never":
        return EXIT_CLEAN
    threshold = {"info": 0, "warning": 1, "error": 2}[fail_on]
    worst = report.worst()
    return EXIT_FINDINGS if worst is not None and worst.rank >= threshold else EXIT_CLEAN


@cli.command()
@click.argument("code")
def explain(code: str) -> None:
    """Explain a rule: what it checks, why it matters, an example and the fix."""
    from ckptlint.rules import explain as explain_rule

    text = explain_rule(code.upper())
    if text is None:
        raise click.UsageError(f"unknown rule code {code!r} (see `ckptlint rules`)")
    click.echo(text.rstrip("\n"))


@cli.command(name="rules")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def rules_cmd(fmt: str) -> None:
    """List every rule: code, default severity, one-line summary."""
    from ckptlint.report.listing import render_rules

    click.echo(render_rules(fmt), nl=False)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def archs(fmt: str) -> None:
    """List every architecture name, its variants and where it comes from."""
    from ckptlint.report.listing import render_archs

    click.echo(render_archs(fmt), nl=False)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and exit 2 for usage errors and unreadable input, never a traceback."""
    from ckptlint.errors import CkptlintError

    try:
        cli.main(args=argv, prog_name="ckptlint", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _die("aborted")
    except click.ClickException as exc:
        if _State.debug:
            raise
        _die(exc.format_message())
    except CkptlintError as exc:
        if _State.debug:
            raise
        _die(str(exc))
    except KeyboardInterrupt:
        _die("interrupted")
    except BrokenPipeError:
        sys.exit(EXIT_CLEAN)
    except Exception as exc:  # a bug of ours: still one line and exit 2; --debug shows the traceback
        if _State.debug:
            raise
        _die(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)")
    sys.exit(EXIT_CLEAN)
