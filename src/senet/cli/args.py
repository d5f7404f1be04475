"""What every subcommand's parser shares: the parser class (short usage and a suggestion on an error),
the help formatter, argument types, and the flags several commands spell the same way."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from typing import Any

from senet import options
from senet.errors import SenetError, did_you_mean


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter with each flag's default appended to its help, where it has one to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            default not in (None, False, argparse.SUPPRESS)
            and action.option_strings
            and "default" not in text
            and action.nargs != 0
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are two lines: a short usage of this (sub)command and the problem,
    with the closest flag or choice as a suggestion."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # --epoch is not --epochs: a misspelt flag is an error, not a guess
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"usage: {self.prog} [options]  (`{self.prog} --help` lists them)\n{self.prog}: error: "
                     f"{message}{self._suggestion(message)}\n")

    def _suggestion(self, message: str) -> str:
        unknown = re.search(r"unrecognized arguments: (\S+)", message)
        if unknown:
            flags = [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]
            return did_you_mean(unknown.group(1).split("=")[0], flags, n=1)
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            return did_you_mean(choice.group(1), [c.strip(" '") for c in choice.group(2).split(",")])
        return ""


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


# Flags that several commands share, spelled the same everywhere (`aliases`: older spellings kept working).


def add_batch_size_arg(parser: argparse.ArgumentParser | Any, *, default: int | None = None, help: str = "images per step",
                       aliases: Sequence[str] = ()) -> None:
    """-b / --batch-size."""
    parser.add_argument("-b", "--batch-size", *aliases, dest="batch_size", type=positive_int, default=default,
                        metavar="N", help=help)


def add_input_size_arg(parser: argparse.ArgumentParser | Any, *, default: int | None = None,
                       help: str = "input side in pixels (default: the model's own, e.g. 224)",
                       aliases: Sequence[str] = ()) -> None:
    """--input-size."""
    parser.add_argument("--input-size", *aliases, dest="input_size", type=positive_int, default=default,
                        metavar="PIXELS", help=help)


def add_workers_arg(parser: argparse.ArgumentParser | Any, *, default: int | None = None,
                    help: str = "data loader processes (never more than the cores this process may use)") -> None:
    """-j / --workers."""
    parser.add_argument("-j", "--workers", type=non_negative_int, default=default, metavar="N", help=help)


def add_amp_arg(parser: argparse.ArgumentParser | Any, *, default: str | None = None, bare: bool = False,
                help: str = "autocast precision (fp16: GPU, with a grad scaler)") -> None:
    """--amp {none,bf16,fp16}; with `bare`, a lone --amp means bf16 (bench's older spelling)."""
    extra: dict[str, Any] = {"nargs": "?", "const": "bf16"} if bare else {}
    parser.add_argument("--amp", choices=options.AMP_MODES, default=default, help=help, **extra)


def add_output_format_args(parser: argparse.ArgumentParser | Any, *, quiet: str | None = None) -> None:
    """--json (one JSON object on stdout) and, given its help, --quiet."""
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    if quiet is not None:
        parser.add_argument("-q", "--quiet", action="store_true", help=quiet)


# ---------------------------------------------------------------------------------------------------
# Shared flags: the model and its SE variant, mapped onto create_model keywords.


def add_model_args(parser: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    """--model (or positional) plus the SE variant flags, named as the model keywords."""
    group = parser.add_argument_group("SE variant (SE models only; defaults reproduce the paper)")
    group.add_argument("--reduction", type=reduction_arg,
                       help="reduction ratio r (paper: 16), or one per SE stage, comma-separated (e.g. 16,16,16,8)")
    group.add_argument("--squeeze", choices=options.SQUEEZES, help="squeeze operator (paper: avg)")
    group.add_argument("--gate", choices=list(options.GATES), help="excitation gate (paper: sigmoid)")
    group.add_argument("--se-position", choices=options.SE_POSITIONS, help="SE integration (Fig. 5; paper: standard)")
    group.add_argument("--se-stages", help="comma-separated stages that get SE, paper numbering 2..5 (e.g. 3,4,5)")
    group.add_argument("--no-se-bias", action="store_true", help="SE FCs without bias (the ablation recipe)")
    arch = parser.add_argument_group("architecture")
    arch.add_argument("--layout", choices=options.LAYOUTS, help="ResNet layout (default: paper)")
    arch.add_argument("--num-classes", type=positive_int, help="classifier outputs")
    arch.add_argument("--in-chans", type=positive_int, help="input channels")


def reduction_arg(text: str) -> float | tuple[int, ...]:
    """--reduction: one ratio (16, 8.5) or one positive int per SE stage, comma-separated (16,16,16,8)."""
    try:
        if "," in text:
            return tuple(int(part) for part in text.split(","))
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a ratio such as 16 or one per SE stage such as 16,16,16,8, got {text!r}") from None
    return int(value) if value.is_integer() else value


# create_model keywords with a flag of the same name (`add_model_args`).
MODEL_FLAGS = ("reduction", "squeeze", "gate", "se_position", "se_stages", "layout", "num_classes", "in_chans")


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The create_model keywords the flags of `add_model_args` ask for (flags left unset are omitted)."""
    kwargs: dict[str, Any] = {}
    if args.reduction is not None:
        kwargs["reduction"] = args.reduction
    for flag in ("squeeze", "gate", "se_position", "layout", "num_classes", "in_chans"):
        if getattr(args, flag, None) is not None:
            kwargs[flag] = getattr(args, flag)
    if args.se_stages:
        try:
            kwargs["se_stages"] = tuple(int(s) for s in args.se_stages.split(","))
        except ValueError:
            raise SenetError(f"--se-stages takes comma-separated stage numbers like 3,4,5, got {args.se_stages!r}") from None
    if args.no_se_bias:
        kwargs["se_bias"] = False
    return kwargs
