"""The ``ckptlint`` command line's grammar: every command, option, default and help text, parsed by ``argparse``.

The standard library's parser, not click: importing click cost ~20 ms of every run's start-up, and a one-file
``ckptlint check`` should start as fast as the loaders' own scripts. Only the parser of the command being run is
built, and options may come before, between or after the positional arguments (``parse_intermixed_args``).
Every usage error is a ``UsageError``: exit 2 and one line on stderr, naming the command and the bad option/value.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from ckptlint._version import __version__
from ckptlint.errors import UsageError

FAIL_ON = ("error", "warning", "info", "never")
FORMATS = ("text", "json", "sarif", "markdown", "github")
CHECK_FORMATS = (*FORMATS, "jsonl")  # jsonl streams: check only
ENGINES = ("local", "ray", "dask")
WRITE_FORMATS = ("same", "safetensors", "torch", "npz", "msgpack")
HELP_WIDTH = 110


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; option help is wrapped to the terminal, at most HELP_WIDTH wide."""

    width = HELP_WIDTH  # the terminal's, set when help is printed (argparse builds one per add_argument too)

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=_Formatter.width)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a one-line ``UsageError`` (exit 2) instead of usage text."""

    def __init__(self, prog: str, description: str, epilog: str | None = None) -> None:
        super().__init__(
            prog=prog,
            description=description,
            epilog=epilog,
            formatter_class=_Formatter,
            allow_abbrev=False,  # `--out` is not `--output`: a typo is an error, never a guess
        )

    def format_help(self) -> str:
        import shutil  # only for help: a run that parses its options never asks the terminal

        _Formatter.width = min(HELP_WIDTH, shutil.get_terminal_size().columns - 2)
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("ckptlint").strip()
        where = f"{command}: " if command else ""
        raise UsageError(f"{where}{message} (see `{self.prog} --help`)")


def _whole_number_at_least_1(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds > 0")
    return value


def _default(text: str, value: object) -> str:
    return f"{text}  [default: {value}]".lstrip()


def _format(p: _Parser, choices: tuple[str, ...], default: str | None = "text", shown: str = "") -> None:
    p.add_argument(
        "--format",
        dest="fmt",
        choices=choices,
        default=default,
        help=_default("Report format.", shown or default),
    )


def _output(p: _Parser, text: str) -> None:
    p.add_argument("-o", "--output", metavar="FILE", default=None, help=text)


def _expectation(p: _Parser, model_help: str) -> None:
    p.add_argument("--arch", metavar="NAME[:VARIANT]", help="Expected architecture (see `ckptlint archs`).")
    p.add_argument("--model", metavar="MODULE:FACTORY", help=model_help)
    p.add_argument("--spec", metavar="FILE", help="Expectation from a `ckptlint dump --format json` file.")


def _write_format(p: _Parser) -> None:
    p.add_argument(
        "--to",
        dest="to_format",
        choices=WRITE_FORMATS,
        default="same",
        help=_default(
            "Output format (same: the input's own; legacy torch files become zip archives).", "same"
        ),
    )


def _check(p: _Parser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="Files, folders, globs or URLs.")
    _expectation(p, "Live model definition (built on the meta device).")
    _format(p, CHECK_FORMATS, default=None, shown="text")
    _output(p, "Write the report to FILE.")
    p.add_argument(
        "--resume", action="store_true", help="jsonl: skip files --output already reports, append the rest."
    )
    p.add_argument(
        "--fail-on", choices=FAIL_ON, default=None, help=_default("Exit 1 at this severity.", "error")
    )
    p.add_argument(
        "--select", metavar="CODES", help="Comma-separated codes or prefixes to report (e.g. CK1,CK201)."
    )
    p.add_argument(
        "--ignore",
        metavar="CODES",
        help="Comma-separated codes or prefixes not to report (what an ignored explainer explained is then "
        "reported by CK100-CK102).",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="Show every raw missing/unexpected/mismatched key."
    )
    p.add_argument(
        "-j",
        "--jobs",
        metavar="N",
        type=_whole_number_at_least_1,
        default=None,
        help=_default(
            "Concurrent reads: local threads, or workers of a local Ray/Dask cluster.", "64 for URLs, else 1"
        ),
    )
    p.add_argument(
        "--engine", choices=ENGINES, default="local", help=_default("Where files are checked.", "local")
    )
    p.add_argument(
        "--engine-address",
        metavar="ADDR",
        help="Ray/Dask cluster (default RAY_ADDRESS / DASK_SCHEDULER_ADDRESS).",
    )
    p.add_argument("--stats", action="store_true", help="Add bytes and requests to remote files' reports.")
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=30.0,
        help=_default("Seconds a remote request may stall before it is retried.", 30.0),
    )
    p.add_argument("--config", dest="config_file", metavar="FILE", help="Read settings from this TOML file.")
    p.add_argument("--isolated", action="store_true", help="Ignore pyproject.toml / ckptlint.toml settings.")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=_default("Progress bar.", "on a terminal, long runs"),
    )


def _dump(p: _Parser) -> None:
    p.add_argument("path", metavar="PATH", help="A checkpoint file, shard index or folder.")
    _format(p, ("text", "json"))
    p.add_argument(
        "--depth", metavar="N", type=_whole_number_at_least_1, help="Collapse the tree below N levels."
    )
    p.add_argument(
        "--filter",
        dest="pattern",
        metavar="GLOB",
        help="Only keys matching this glob, e.g. '*/pos_embedding'.",
    )
    _output(p, "Write to FILE instead of stdout.")


def _diff(p: _Parser) -> None:
    p.add_argument("a", metavar="A", help="The reference checkpoint.")
    p.add_argument("b", metavar="B", help="The checkpoint compared with A.")
    _format(p, ("text", "json"))
    _output(p, "Write to FILE instead of stdout.")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="List every renamed key, not only the rename rules."
    )


def _in_out(p: _Parser, nargs: str | None = None) -> None:
    p.add_argument(
        "src", metavar="IN", nargs=nargs, help="The checkpoint to read (file, shard index or folder)."
    )
    p.add_argument("dst", metavar="OUT", nargs=nargs, help="Where to write (never over IN).")


def _strip(p: _Parser) -> None:
    _in_out(p)
    p.add_argument("--keep", metavar="GROUPS", help="Comma-separated top-level groups to keep, e.g. params.")
    p.add_argument(
        "--drop", metavar="GROUPS", help="Comma-separated top-level groups to drop, e.g. opt,chrono."
    )
    _write_format(p)


def _fix(p: _Parser) -> None:
    _in_out(p)
    _expectation(p, "Live model definition.")
    _write_format(p)
    _format(p, FORMATS)
    _output(p, "Write the report on OUT to FILE.")


def _convert(p: _Parser) -> None:
    _in_out(p, "?")
    p.add_argument(
        "--to", metavar="NAME[:VARIANT]", help="Target architecture (see `ckptlint convert --list`)."
    )
    p.add_argument(
        "--set",
        dest="sets",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="What the weights cannot tell (act=quick_gelu); repeat for more.",
    )
    p.add_argument(
        "--list", dest="list_pairs", action="store_true", help="List every supported pair and exit."
    )
    _format(p, FORMATS)
    _output(p, "Write the report on OUT to FILE.")


def _explain(p: _Parser) -> None:
    p.add_argument("code", metavar="CODE", help="A rule code, e.g. CK103 (see `ckptlint rules`).")


def _rules(p: _Parser) -> None:
    _format(p, ("text", "json"))


def _archs(p: _Parser) -> None:
    p.add_argument("name", metavar="NAME", nargs="?", help="One architecture, e.g. clippo.")
    _format(p, ("text", "json"))


def _schema(p: _Parser) -> None:
    p.add_argument(
        "--for",
        dest="what",
        choices=("check", "diff"),
        default="check",
        help=_default("Which JSON output to describe.", "check"),
    )


# name -> (description: first line is the summary `ckptlint --help` lists, options)
COMMANDS: dict[str, tuple[str, Callable[[_Parser], None]]] = {
    "check": (
        "Check checkpoints (files, folders, globs) and explain the root cause of every problem.",
        _check,
    ),
    "dump": ("Print the parameter tree of a checkpoint (header-only; never executes it).", _dump),
    "diff": (
        "Compare two checkpoints header-only: renames (prefix or framework mapping), shape and dtype changes.\n\n"
        "Exit 0 when B has the same tensors as A, 1 when they differ.",
        _diff,
    ),
    "strip": (
        "Write OUT with only some top-level groups of IN (e.g. params without opt/chrono); IN is never touched.\n\n"
        "Give exactly one of --keep or --drop. IN is a weights file, a shard index or a checkpoint folder (then OUT\n"
        "is a folder unless it ends in a weights suffix). The output is written atomically and verified by\n"
        "re-reading it; torch is not needed.",
        _strip,
    ),
    "fix": (
        "Apply the mechanical fixes `check` reports (strip a prefix, take a subtree, drop training state or an\n"
        "extra tower, transpose kernels).\n\n"
        "Writes OUT (never IN), re-checks it and reports what changed; exit code as for `check` on OUT. Without\n"
        "--arch, --model or --spec the expectation is the one `check` infers from IN. IN may be a folder, as for\n"
        "`check`.",
        _fix,
    ),
    "convert": (
        "Convert IN into another framework's layout (open_clip, transformers, timm; from big_vision), write OUT.\n\n"
        "OUT ending in .safetensors/.bin/.pt is one file, otherwise a folder in the target's native form (weights,\n"
        "config files, the input's tokenizer files). OUT is checked against the target; exit code as `check` on\n"
        "OUT. `ckptlint convert --list` lists every supported pair.",
        _convert,
    ),
    "explain": ("Explain a rule: what it checks, why it matters, an example and the fix.", _explain),
    "rules": ("List every rule: code, default severity, one-line summary.", _rules),
    "archs": (
        "List every architecture, all its variants and where it comes from; with NAME, every variant of that\n"
        "architecture with its parameters.",
        _archs,
    ),
    "schema": (
        "Print the JSON Schema of `check --format json` (or `diff --format json`), generated from the models.",
        _schema,
    ),
}


def _summary(description: str) -> str:
    first = description.split("\n\n")[0].replace("\n", " ")
    return first if len(first) <= 97 else first[:94].rsplit(" ", 1)[0] + "..."


def _main_parser() -> _Parser:
    width = max(len(name) for name in COMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {_summary(d)}" for name, (d, _) in COMMANDS.items())
    p = _Parser(
        "ckptlint",
        "Checkpoint compatibility linter: find why weights will not load, or load wrong.",
        f"commands:\n{listing}\n\nRun `ckptlint COMMAND --help` for a command's options.",
    )
    p.usage = "ckptlint [-h] [--version] [--debug] COMMAND [ARGS]..."
    p.add_argument(
        "--version",
        action="version",
        version=f"ckptlint, version {__version__}",
        help="Show the version and exit.",
    )
    p.add_argument("--debug", action="store_true", help="Show a traceback for errors (for bug reports).")
    return p


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command (``ckptlint NAME --help`` prints its help)."""
    description, add_options = COMMANDS[name]
    p = _Parser(f"ckptlint {name}", description)
    add_options(p)
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)  # also accepted after the command
    return p


def _command_at(argv: list[str]) -> int:
    """Index of the first argument that is not an option (the command), or ``len(argv)``."""
    return next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``[GLOBAL OPTIONS] COMMAND [ARGS]...`` into the command's options plus ``command`` and ``debug``.

    ``--help`` and ``--version`` print and exit 0 (SystemExit); anything else wrong raises ``UsageError``.
    """
    split = _command_at(argv)
    if "--" in argv[:split]:  # `ckptlint -- check ...`: the end of the global options
        cut = argv.index("--")
        argv = argv[:cut] + argv[cut + 1 :]
        split = _command_at(argv)
    debug = (
        bool(split) and _main_parser().parse_args(argv[:split]).debug
    )  # built only when options come first
    if split == len(argv):
        raise UsageError("missing command (see `ckptlint --help`)")
    name = argv[split]
    if name not in COMMANDS:
        raise UsageError(
            f"unknown command {name!r}: choose from {', '.join(COMMANDS)} (see `ckptlint --help`)"
        )
    rest, parser = argv[split + 1 :], command_parser(name)
    # after `--` everything is a positional argument (a path may start with "-"); argparse's intermixed parsing
    # does not keep `--` apart, so those arguments stand in as placeholders and are put back after parsing
    hidden: dict[str, str] = {}
    if "--" in rest:
        cut = rest.index("--")
        hidden = {f"\0ckptlint-arg-{n}": arg for n, arg in enumerate(rest[cut + 1 :])}
        rest = rest[:cut] + list(hidden)
    args = parser.parse_intermixed_args(rest)
    for key, value in vars(args).items():
        if isinstance(value, str) and value in hidden:
            setattr(args, key, hidden[value])
        elif isinstance(value, list):
            setattr(args, key, [hidden.get(v, v) if isinstance(v, str) else v for v in value])
    args.command = name
    args.debug = args.debug or debug
    return args
