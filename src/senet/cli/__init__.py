"""The `senet` command: argument parsing and dispatch only (the work lives in engine/analysis/interop).

One module per command group, each adding its subcommands' parsers (`add_parsers`) and holding the
functions they dispatch to: `models` (models, info), `train` (train, demo, ablate), `evaluate` (eval),
`bench`, `interop` (convert, predict, export), `analyze`. `args` holds what the parsers share. A
subcommand imports the library code it runs when it runs, so `senet --help` answers at once.

Errors a user can cause (SenetError) print as one line `senet: error: ...` and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any
from collections.abc import Callable, Sequence

from senet import allocator
from senet.cli import analyze, bench, evaluate, interop, models, train
from senet.cli.args import Parser
from senet.errors import SenetError, file_system_error

# The command groups in the order `senet --help` lists their commands.
GROUPS = (models, train, evaluate, bench, interop, analyze)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; each parsed Namespace carries its command in `_commands`."""
    from senet import __version__

    parser = Parser(prog="senet", description="Squeeze-and-Excitation Networks for PyTorch")
    parser.add_argument("--version", action="version", version=f"senet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}
    for group in GROUPS:
        group.add_parsers(sub, commands)
    parser.set_defaults(_commands=commands, _parsers=sub.choices)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`; a flag no command knows is reported by that command's parser (its usage, a suggestion)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args._parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    args._argv = argv  # (the command as given, for messages that say "repeat this command")
    return args


_SHOW_WARNING = warnings.showwarning


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """senet's own notes (`AssumedSourceWarning`) as the CLI's other messages: `senet: note: ...`, one line."""
    if category.__module__.startswith("senet."):
        print(f"senet: note: {message}", file=sys.stderr)
    else:
        _SHOW_WARNING(message, category, *args, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    warnings.showwarning = _one_line_warning
    try:
        allocator.keep_freed_memory()  # a training step's freed memory is needed again by the next one
        return args._commands[args.command](args)
    except SenetError as error:
        print(f"senet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"senet: interrupted{'; ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `senet models | head`
        sys.stderr.close()
        return 0
    except OSError as error:  # a file system's refusal (read-only, full) wherever it struck: its cause, one line
        refused = file_system_error(error)
        if refused is None:
            raise
        print(f"senet: error: {refused}", file=sys.stderr)
        return 2
