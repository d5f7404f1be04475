"""`senet models` and `senet info`: the registered models and one model's complexity."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from senet.cli.args import add_input_size_arg, add_model_args, model_kwargs


def cmd_models(args: argparse.Namespace) -> int:
    from senet.analysis.zoo import format_model_rows, markdown_twin_table, model_rows

    rows = model_rows(args.filter)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(markdown_twin_table(rows) if args.markdown else format_model_rows(rows))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from senet.analysis.zoo import model_report

    report = model_report(args.model, model_kwargs(args), input_size=args.input_size, retrofit=args.add_se)
    print(json.dumps(report.as_dict(), indent=1, default=list) if args.json else report.format())
    return 0


def add_parsers(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """`senet models` and `senet info`."""
    p = sub.add_parser("models", help="list every registered model with params and GMACs")
    p.add_argument("filter", nargs="?", default="*", help="shell-style pattern, e.g. 'se_*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (as in docs/models.md)")
    commands["models"] = cmd_models

    p = sub.add_parser("info", help="complexity, SE overhead and a per-stage table of one model")
    p.add_argument("model")
    add_input_size_arg(p, aliases=("--input",))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--add-se", action="store_true", help="count a plain model with SE added by senet.add_se, "
                   "with the SE variant flags as its options")
    add_model_args(p)
    commands["info"] = cmd_info
