"""The ``ckptlint`` command: thin — parse options, call the Python API, pick a reporter, set the exit code.

Only click is imported at module level so ``ckptlint --version`` starts fast; every command
imports what it needs when it runs.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from ckptlint._version import __version__

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
FAIL_ON = ("error", "warning", "info", "never")
FORMATS = ("text", "json", "sarif", "markdown", "github")
CHECK_FORMATS = (*FORMATS, "jsonl")  # jsonl streams: check only
ENGINES = ("local", "ray", "dask")


class _State:
    debug = False


def _die(message: str) -> NoReturn:
    """Exit 2 with exactly one line on stderr."""
    one_line = " ".join(message.split())
    click.echo(f"ckptlint: error: {one_line}", err=True)
    sys.exit(EXIT_ERROR)


def _emit(text: str, output: str | None) -> None:
    if output:
        from ckptlint.errors import UsageError
        from ckptlint.outfile import write_atomic

        try:
            write_atomic(output, text)
        except OSError as exc:
            raise UsageError(f"{output}: cannot write the report: {exc.strerror or exc}") from None
    else:
        click.echo(text, nl=False)


def _render(report: Any, fmt: str, *, verbose: bool, fail_on: str, to_file: bool) -> str:
    """Pick the reporter; the text reporter gets colour only when writing to a terminal."""
    if fmt == "text":
        from ckptlint.report import text

        colour = False if to_file else text.use_colour(sys.stdout)
        return text.render(report, verbose=verbose, fail_on=fail_on, colour=colour)
    from ckptlint.report import render

    return render(report, fmt, verbose=verbose, fail_on=fail_on)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
    from ckptlint.archs.detect import detect_layout
    from ckptlint.engine import fact_findings
    from ckptlint.readers import read_checkpoint

    ckpt = read_checkpoint(path)
    layout = detect_layout(ckpt).name
    findings = fact_findings(ckpt)
    if fmt == "json":
        from ckptlint.report import dump_json

        _emit(dump_json.render(ckpt, layout, findings), output)
    else:
        from ckptlint.report import dump_text

        _emit(dump_text.render(ckpt, layout, findings, depth=depth, pattern=pattern), output)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--arch", default=None, help="Expected architecture NAME[:VARIANT] (see `ckptlint archs`).")
@click.option(
    "--model", default=None, help="Live model definition MODULE:FACTORY (built on the meta device)."
)
@click.option("--spec", default=None, help="Expectation from a `ckptlint dump --format json` file.")
@click.option(
    "--format", "fmt", type=click.Choice(CHECK_FORMATS), default=None, help="Report format  [default: text]"
)
@click.option("--output", "-o", default=None, help="Write the report to FILE.")
@click.option("--resume", is_flag=True, help="jsonl: skip files --output already reports, append the rest.")
@click.option(
    "--fail-on", type=click.Choice(FAIL_ON), default=None, help="Exit 1 at this severity  [default: error]"
)
@click.option("--select", default=None, help="Comma-separated codes or prefixes to report (e.g. CK1,CK201).")
@click.option("--ignore", default=None, help="Comma-separated codes or prefixes to drop.")
@click.option("--verbose", "-v", is_flag=True, help="Show every raw missing/unexpected/mismatched key.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Concurrent reads: local threads, or workers of a local Ray/Dask cluster  [default: 64 for URLs, else 1]",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="local",
    show_default=True,
    help="Where files are checked.",
)
@click.option(
    "--engine-address", default=None, help="Ray/Dask cluster (default RAY_ADDRESS / DASK_SCHEDULER_ADDRESS)."
)
@click.option("--stats", is_flag=True, help="Add bytes and requests to remote files' reports.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a remote request may stall before it is retried.",
)
@click.option("--config", "config_file", default=None, help="Read settings from this TOML file.")
@click.option("--isolated", is_flag=True, help="Ignore pyproject.toml / ckptlint.toml settings.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar [default: on a terminal, long runs]."
)
def check(
    paths: tuple[str, ...],
    arch: str | None,
    model: str | None,
    spec: str | None,
    fmt: str | None,
    output: str | None,
    fail_on: str | None,
    select: str | None,
    ignore: str | None,
    verbose: bool,
    jobs: int | None,
    engine: str,
    engine_address: str | None,
    stats: bool,
    timeout: float,
    resume: bool,
    config_file: str | None,
    isolated: bool,
    progress: bool | None,
) -> None:
    """Check checkpoints (files, folders, globs) and explain the root cause of every problem."""
    if sum(x is not None for x in (arch, model, spec)) > 1:
        raise click.UsageError("give at most one of --arch, --model, --spec")
    from pathlib import Path

    from ckptlint import config as cfgmod
    from ckptlint.discover import expand_paths
    from ckptlint.netfaults import RetryPolicy
    from ckptlint.runner import plan, run
    from ckptlint.scanning import ScanOptions

    if isolated:
        cfg = cfgmod.Config()
    else:
        cfg = cfgmod.load_config(Path(config_file) if config_file else cfgmod.find_config())
    fmt = fmt or cfg.format
    fail_on = fail_on or cfg.fail_on
    if arch is not None:
        cfgmod.validate_arch(arch, "--arch")
    tasks = plan(
        expand_paths(list(paths)),
        arch=arch,
        model=model,
        spec=spec,
        select=cfgmod.validate_codes(_codes(select), "--select") if select is not None else None,
        ignore=cfgmod.validate_codes(_codes(ignore), "--ignore") if ignore is not None else None,
        config=cfg,
    )
    opts = ScanOptions(stats=stats, retry=RetryPolicy(timeout=timeout), debug=_State.debug)
    if resume and (fmt != "jsonl" or not output):
        raise click.UsageError("--resume needs --format jsonl and --output FILE")
    if fmt == "jsonl":
        from ckptlint.scanning.stream import check_jsonl

        tally = check_jsonl(
            tasks,
            output=output,
            resume=resume,
            engine=engine,
            address=engine_address,
            workers=jobs,
            opts=opts,
            progress=progress,
        )
        if tally.first_unreadable:
            path, reason = tally.first_unreadable
            more = f" (and {tally.unreadable - 1} more unreadable)" if tally.unreadable > 1 else ""
            _die(f"{path}: {reason}{more}")
        sys.exit(tally.exit_code(fail_on))
    report = run(tasks, jobs=jobs, progress=progress, engine=engine, address=engine_address, opts=opts)
    unreadable = [f for f in report.files if f.error]
    if unreadable and len(report.files) == 1 and fmt == "text" and not output:
        _die(f"{unreadable[0].path}: {unreadable[0].error}")  # the report would only repeat this line
    _emit(_render(report, fmt, verbose=verbose, fail_on=fail_on, to_file=bool(output)), output)
    if unreadable:
        more = f" (and {len(unreadable) - 1} more unreadable)" if len(unreadable) > 1 else ""
        _die(f"{unreadable[0].path}: {unreadable[0].error}{more}")
    sys.exit(exit_code(report, fail_on))


def _codes(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def exit_code(report: Any, fail_on: str) -> int:
    """CONTRACT: 2 when an input was unreadable, 1 when a finding is at/above ``fail_on``, else 0."""
    if any(f.error for f in report.files):
        return EXIT_ERROR
    if fail_on == "never":
        return EXIT_CLEAN
    threshold = {"info": 0, "warning": 1, "error": 2}[fail_on]
    worst = report.worst()
    return EXIT_FINDINGS if worst is not None and worst.rank >= threshold else EXIT_CLEAN


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--output", "-o", default=None, help="Write to FILE instead of stdout.")
@click.option("--verbose", "-v", is_flag=True, help="List every renamed key, not only the rename rules.")
def diff(a: str, b: str, fmt: str, output: str | None, verbose: bool) -> None:
    """Compare two checkpoints header-only: renames (prefix or framework mapping), shape and dtype changes.

    Exit 0 when B has the same tensors as A, 1 when they differ.
    """
    from ckptlint.diffing import diff_paths
    from ckptlint.report import diff_report

    result = diff_paths(a, b)
    if fmt == "json":
        _emit(diff_report.render_json(result), output)
    else:
        colour = False if output else diff_report.use_colour(sys.stdout)
        _emit(diff_report.render_text(result, verbose=verbose, colour=colour), output)
    sys.exit(EXIT_CLEAN if result.identical else EXIT_FINDINGS)


@cli.command()
@click.argument("src", metavar="IN")
@click.argument("dst", metavar="OUT")
@click.option("--keep", default=None, help="Comma-separated top-level groups to keep, e.g. params.")
@click.option("--drop", default=None, help="Comma-separated top-level groups to drop, e.g. opt,chrono.")
@click.option(
    "--to",
    "to_format",
    type=click.Choice(["same", "safetensors", "torch", "npz", "msgpack"]),
    default="same",
    show_default=True,
    help="Output format (same: the input's own; legacy torch files become zip archives).",
)
def strip(src: str, dst: str, keep: str | None, drop: str | None, to_format: str) -> None:
    """Write OUT with only some top-level groups of IN (e.g. params without opt/chrono); IN is never touched.

    IN is a weights file, a shard index or a checkpoint folder (then OUT is a folder unless it ends in a weights
    suffix). The output is written atomically and verified by re-reading it; torch is not needed.
    """
    if (keep is None) == (drop is None):
        raise click.UsageError("give exactly one of --keep or --drop")
    from ckptlint.strip import strip_checkpoint

    result = strip_checkpoint(
        src,
        dst,
        keep=_names(keep) if keep is not None else None,
        drop=_names(drop) if drop is not None else None,
        to_format=to_format,
    )
    click.echo(result.describe())


def _names(value: str) -> list[str]:
    names = [n.strip().strip("/.") for n in value.split(",") if n.strip().strip("/.")]
    if not names:
        raise click.UsageError("expected comma-separated group names, e.g. params or opt,chrono")
    return names


@cli.command()
@click.argument("src", metavar="IN")
@click.argument("dst", metavar="OUT")
@click.option("--arch", default=None, help="Expected architecture NAME[:VARIANT] (see `ckptlint archs`).")
@click.option("--model", default=None, help="Live model definition MODULE:FACTORY.")
@click.option("--spec", default=None, help="Expectation from a `ckptlint dump --format json` file.")
@click.option(
    "--to",
    "to_format",
    type=click.Choice(["same", "safetensors", "torch", "npz", "msgpack"]),
    default="same",
    show_default=True,
    help="Output format (same: the input's own; legacy torch files become zip archives).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--output", "-o", default=None, help="Write the report on OUT to FILE.")
def fix(
    src: str,
    dst: str,
    arch: str | None,
    model: str | None,
    spec: str | None,
    to_format: str,
    fmt: str,
    output: str | None,
) -> None:
    """Apply mechanical fixes (strip a prefix, take a subtree, drop training state or non-persistent buffers).

    Writes OUT (never IN), re-checks it and reports what changed; exit code as for `check` on OUT.
    """
    if sum(x is not None for x in (arch, model, spec)) != 1:
        raise click.UsageError("give exactly one of --arch, --model, --spec")
    from ckptlint.fixer import fix_checkpoint

    result = fix_checkpoint(src, dst, arch=arch, model=model, spec=spec, to_format=to_format)
    click.echo(result.describe(), err=fmt != "text" and not output)
    _emit(_render(result.after, fmt, verbose=False, fail_on="error", to_file=bool(output)), output)
    sys.exit(exit_code(result.after, "error"))


@cli.command()
@click.argument("src", metavar="IN", required=False)
@click.argument("dst", metavar="OUT", required=False)
@click.option(
    "--to", "to", default=None, help="Target architecture NAME[:VARIANT] (see `ckptlint convert --list`)."
)
@click.option(
    "--set", "sets", multiple=True, help="KEY=VALUE for what the weights cannot tell (act=quick_gelu)."
)
@click.option("--list", "list_pairs", is_flag=True, help="List every supported pair and exit.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--output", "-o", default=None, help="Write the report on OUT to FILE.")
def convert(
    src: str | None,
    dst: str | None,
    to: str | None,
    sets: tuple[str, ...],
    list_pairs: bool,
    fmt: str,
    output: str | None,
) -> None:
    """Convert IN into another framework's layout (open_clip, transformers, timm; from big_vision), write OUT.

    OUT ending in .safetensors/.bin/.pt is one file, otherwise a folder in the target's native form (weights,
    config files, the input's tokenizer files). OUT is checked against the target; exit code as `check` on OUT.
    """
    if list_pairs:
        from ckptlint.convert.listing import render as render_pairs

        click.echo(render_pairs("json" if fmt == "json" else "text"), nl=False)
        return
    if src is None or dst is None or to is None:
        raise click.UsageError("give IN, OUT and --to NAME[:VARIANT] (or --list)")
    from ckptlint.convert.plan import parse_sets
    from ckptlint.convert.run import convert_checkpoint

    result = convert_checkpoint(src, dst, to, parse_sets(sets))
    click.echo(result.describe(), err=fmt != "text" and not output)
    _emit(_render(result.after, fmt, verbose=False, fail_on="error", to_file=bool(output)), output)
    sys.exit(exit_code(result.after, "error"))


@cli.command()
@click.argument("code")
def explain(code: str) -> None:
    """Explain a rule: what it checks, why it matters, an example and the fix."""
    from ckptlint.rules import explain as explain_rule

    click.echo(explain_rule(code).rstrip("\n"))  # an unknown code is a UsageError: exit 2, one line


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


@cli.command()
@click.option(
    "--for",
    "what",
    type=click.Choice(["check", "diff"]),
    default="check",
    show_default=True,
    help="Which JSON output to describe.",
)
def schema(what: str) -> None:
    """Print the JSON Schema of `check --format json` (or `diff --format json`), generated from the models."""
    import json

    if what == "diff":
        from ckptlint.diffing import DiffResult

        doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", **DiffResult.model_json_schema()}
    else:
        from ckptlint.report.json_report import json_schema

        doc = json_schema()
    click.echo(json.dumps(doc, indent=2))


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
