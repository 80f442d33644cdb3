"""The ``ckptlint`` command: thin — parse options, call the Python API, pick a reporter, set the exit code.

Options are parsed by the standard library's argparse (``ckptlint.cli_args``), not click: importing click cost
~20 ms of every run's start-up. Only the parser is imported at module level, so ``ckptlint --version`` starts
fast; every command imports what it needs when it runs.
"""

from __future__ import annotations

import sys
from argparse import Namespace
from collections.abc import Callable
from typing import Any, NoReturn

from ckptlint.cli_args import parse
from ckptlint.errors import CkptlintError, UsageError

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _State:
    debug = False


def _die(message: str) -> NoReturn:
    """Exit 2 with exactly one line on stderr."""
    one_line = " ".join(message.split())
    _echo(f"ckptlint: error: {one_line}\n", err=True)
    sys.exit(EXIT_ERROR)


def _echo(text: str, *, err: bool = False) -> None:
    """Write ``text`` as is and flush (a closed pipe surfaces here, inside ``main``'s handler)."""
    stream = sys.stderr if err else sys.stdout
    if stream is None:  # started with the stream closed (`ckptlint rules >&-`): nothing to write to
        return
    stream.write(text)
    stream.flush()


def _emit(text: str, output: str | None) -> None:
    if output:
        from ckptlint.outfile import write_atomic

        try:
            write_atomic(output, text)
        except OSError as exc:
            raise UsageError(f"{output}: cannot write the report: {exc.strerror or exc}") from None
    else:
        _echo(text)


def _render(report: Any, fmt: str, *, verbose: bool, fail_on: str, to_file: bool) -> str:
    """Pick the reporter; the text reporter gets colour only when writing to a terminal."""
    if fmt == "text":
        from ckptlint.report import text

        colour = False if to_file else text.use_colour(sys.stdout)
        return text.render(report, verbose=verbose, fail_on=fail_on, colour=colour)
    from ckptlint.report import render

    return render(report, fmt, verbose=verbose, fail_on=fail_on)


def _one_expectation(args: Namespace) -> None:
    if sum(x is not None for x in (args.arch, args.model, args.spec)) > 1:
        raise UsageError("give at most one of --arch, --model, --spec")


def dump(args: Namespace) -> None:
    """``ckptlint dump PATH``: the parameter tree (header-only; never executes it)."""
    from ckptlint.archs.detect import detect_layout
    from ckptlint.engine import fact_findings
    from ckptlint.readers import read_checkpoint

    ckpt = read_checkpoint(args.path)
    layout = detect_layout(ckpt).name
    findings = fact_findings(ckpt)
    if args.fmt == "json":
        from ckptlint.report import dump_json

        _emit(dump_json.render(ckpt, layout, findings), args.output)
    else:
        from ckptlint.report import dump_text

        text = dump_text.render(ckpt, layout, findings, depth=args.depth, pattern=args.pattern)
        _emit(text, args.output)


def check(args: Namespace) -> None:
    """``ckptlint check PATH...``: one report for every input, exit code per CONTRACT."""
    _one_expectation(args)
    from pathlib import Path

    from ckptlint import config as cfgmod
    from ckptlint.discover import expand_paths
    from ckptlint.netfaults import RetryPolicy
    from ckptlint.runner import plan, run
    from ckptlint.scanning import ScanOptions

    if args.isolated:
        cfg = cfgmod.Config()
    else:
        cfg = cfgmod.load_config(Path(args.config_file) if args.config_file else cfgmod.find_config())
    fmt = args.fmt or cfg.format
    fail_on = args.fail_on or cfg.fail_on
    if args.arch is not None:
        cfgmod.validate_arch(args.arch, "--arch")
    select, ignore = args.select, args.ignore
    tasks = plan(
        expand_paths(list(args.paths)),
        arch=args.arch,
        model=args.model,
        spec=args.spec,
        select=cfgmod.validate_codes(_codes(select), "--select") if select is not None else None,
        ignore=cfgmod.validate_codes(_codes(ignore), "--ignore") if ignore is not None else None,
        config=cfg,
    )
    opts = ScanOptions(stats=args.stats, retry=RetryPolicy(timeout=args.timeout), debug=_State.debug)
    output = args.output
    if args.resume and (fmt != "jsonl" or not output):
        raise UsageError("--resume needs --format jsonl and --output FILE")
    if fmt == "jsonl":
        from ckptlint.scanning.stream import check_jsonl

        tally = check_jsonl(
            tasks,
            output=output,
            resume=args.resume,
            engine=args.engine,
            address=args.engine_address,
            workers=args.jobs,
            opts=opts,
            progress=args.progress,
        )
        if tally.first_unreadable:
            path, reason = tally.first_unreadable
            more = f" (and {tally.unreadable - 1} more unreadable)" if tally.unreadable > 1 else ""
            _die(f"{path}: {reason}{more}")
        sys.exit(tally.exit_code(fail_on))
    report = run(
        tasks,
        jobs=args.jobs,
        progress=args.progress,
        engine=args.engine,
        address=args.engine_address,
        opts=opts,
    )
    unreadable = [f for f in report.files if f.error]
    if unreadable and len(report.files) == 1 and fmt == "text" and not output:
        _die(f"{unreadable[0].path}: {unreadable[0].error}")  # the report would only repeat this line
    _emit(_render(report, fmt, verbose=args.verbose, fail_on=fail_on, to_file=bool(output)), output)
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


def diff(args: Namespace) -> None:
    """``ckptlint diff A B``: exit 0 when B has the same tensors as A, 1 when they differ."""
    from ckptlint.diffing import diff_paths
    from ckptlint.report import diff_report

    result = diff_paths(args.a, args.b)
    if args.fmt == "json":
        _emit(diff_report.render_json(result), args.output)
    else:
        colour = False if args.output else diff_report.use_colour(sys.stdout)
        _emit(diff_report.render_text(result, verbose=args.verbose, colour=colour), args.output)
    sys.exit(EXIT_CLEAN if result.identical else EXIT_FINDINGS)


def strip(args: Namespace) -> None:
    """``ckptlint strip IN OUT``: keep or drop top-level groups; IN is never touched."""
    if (args.keep is None) == (args.drop is None):
        raise UsageError("give exactly one of --keep or --drop")
    from ckptlint.strip import strip_checkpoint

    result = strip_checkpoint(
        args.src,
        args.dst,
        keep=_names(args.keep) if args.keep is not None else None,
        drop=_names(args.drop) if args.drop is not None else None,
        to_format=args.to_format,
    )
    _echo(result.describe() + "\n")


def _names(value: str) -> list[str]:
    names = [n.strip().strip("/.") for n in value.split(",") if n.strip().strip("/.")]
    if not names:
        raise UsageError("expected comma-separated group names, e.g. params or opt,chrono")
    return names


def _report_written(result: Any, args: Namespace) -> NoReturn:
    """What ``fix``/``convert`` did (on stderr when stdout carries a machine-readable report), then OUT's report."""
    _echo(result.describe() + "\n", err=args.fmt != "text" and not args.output)
    report = _render(result.after, args.fmt, verbose=False, fail_on="error", to_file=bool(args.output))
    _emit(report, args.output)
    sys.exit(exit_code(result.after, "error"))


def fix(args: Namespace) -> None:
    """``ckptlint fix IN OUT``: apply the mechanical fixes ``check`` reports, write OUT, re-check it."""
    _one_expectation(args)
    from ckptlint.fixer import fix_checkpoint

    result = fix_checkpoint(
        args.src, args.dst, arch=args.arch, model=args.model, spec=args.spec, to_format=args.to_format
    )
    _report_written(result, args)


def convert(args: Namespace) -> None:
    """``ckptlint convert IN OUT --to NAME``: another framework's layout; ``--list`` lists the pairs."""
    if args.list_pairs:
        from ckptlint.convert.listing import render as render_pairs

        _echo(render_pairs("json" if args.fmt == "json" else "text"))
        return
    if args.src is None or args.dst is None or args.to is None:
        raise UsageError("give IN, OUT and --to NAME[:VARIANT] (or --list)")
    from ckptlint.convert.plan import parse_sets
    from ckptlint.convert.run import convert_checkpoint

    result = convert_checkpoint(args.src, args.dst, args.to, parse_sets(tuple(args.sets)))
    _report_written(result, args)


def explain(args: Namespace) -> None:
    """``ckptlint explain CODE``: an unknown code is a UsageError (exit 2, one line)."""
    from ckptlint.rules import explain as explain_rule

    _echo(explain_rule(args.code).rstrip("\n") + "\n")


def rules(args: Namespace) -> None:
    """``ckptlint rules``: every rule's code, default severity and summary."""
    from ckptlint.report.listing import render_rules

    _echo(render_rules(args.fmt))


def archs(args: Namespace) -> None:
    """``ckptlint archs [NAME]``: every architecture, or every variant of NAME."""
    from ckptlint.report.listing import render_arch, render_archs

    _echo(render_arch(args.name, args.fmt) if args.name else render_archs(args.fmt))


def schema(args: Namespace) -> None:
    """``ckptlint schema``: the JSON Schema of ``check --format json`` (or ``diff --format json``)."""
    import json

    if args.what == "diff":
        from ckptlint.diffing import DiffResult

        doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", **DiffResult.model_json_schema()}
    else:
        from ckptlint.report.json_report import json_schema

        doc = json_schema()
    _echo(json.dumps(doc, indent=2) + "\n")


COMMANDS: dict[str, Callable[[Namespace], None]] = {
    "check": check,
    "dump": dump,
    "diff": diff,
    "strip": strip,
    "fix": fix,
    "convert": convert,
    "explain": explain,
    "rules": rules,
    "archs": archs,
    "schema": schema,
}


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and exit 2 for usage errors and unreadable input, never a traceback."""
    _State.debug = False
    try:
        args = parse(sys.argv[1:] if argv is None else list(argv))
        _State.debug = args.debug
        COMMANDS[args.command](args)
    except CkptlintError as exc:
        if _State.debug:
            raise
        _die(str(exc))
    except KeyboardInterrupt:
        _die("interrupted")
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(EXIT_CLEAN)
    except Exception as exc:  # a bug of ours: still one line and exit 2; --debug shows the traceback
        if _State.debug:
            raise
        _die(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)")
    sys.exit(EXIT_CLEAN)


def _silence_stdout() -> None:
    """The reader of stdout went away (``ckptlint rules | head -1``): point stdout at /dev/null so that Python's
    final flush does not print a second BrokenPipeError (the recipe of the ``signal`` module's documentation)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
