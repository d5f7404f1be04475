"""`senet models` and `senet info`: the registered models and one model's complexity."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from senet.cli.args import add_input_size_arg, add_model_args, model_kwargs
from senet.errors import SenetError


def build_model_for_counting(name: str, kwargs: dict[str, Any]):
    """Build on the meta device: complexity needs shapes, not weights, so this is instant for any size."""
    import torch

    from senet.models import create_model

    with torch.device("meta"):
        return create_model(name, **kwargs)


# ---------------------------------------------------------------------------------------------------
# senet models / senet info


def model_rows(pattern: str = "*") -> list[dict[str, Any]]:
    """One row per registered model matching `pattern`: name, SE or not, plain twin, input, params, GMACs."""
    from senet.analysis import complexity
    from senet.models import is_se_model, list_models, plain_twin

    rows = []
    for name in list_models(pattern):
        stats = complexity(build_model_for_counting(name, {}))
        rows.append(
            {
                "model": name,
                "se": is_se_model(name),
                "plain_twin": plain_twin(name),
                "input": list(stats.input_size),
                "params": stats.params,
                "macs": stats.macs,
                "gmacs": round(stats.gmacs, 4),  # (for reading; tables print macs, rounded once)
            }
        )
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    rows = model_rows(args.filter)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if args.markdown:
        print(markdown_twin_table(rows))
        return 0
    print(f"{'model':24s} {'input':>13s} {'params':>9s} {'GMACs':>8s}  plain twin")
    for row in rows:
        size = "x".join(str(s) for s in row["input"])
        twin = row["plain_twin"] if row["se"] else ""
        print(f"{row['model']:24s} {size:>13s} {row['params'] / 1e6:8.2f}M {row['macs'] / 1e9:8.3f}  {twin}")
    print(f"{len(rows)} models; GMACs = multiply-accumulates (the paper's 'GFLOPs') at the input shown")
    return 0


def markdown_twin_table(rows: list[dict[str, Any]]) -> str:
    """Each plain model beside its SE twin: the README's model table."""
    by_name = {row["model"]: row for row in rows}
    lines = ["| plain model | SE model | input | params | SE params | GMACs | SE GMACs |", "|---|---|---|---:|---:|---:|---:|"]
    for row in rows:
        if row["se"]:
            continue
        twin = next((r for r in rows if r["se"] and r["plain_twin"] == row["model"]), None)
        size = "x".join(str(s) for s in row["input"])
        se_cells = (f"`{twin['model']}`", f"{twin['params'] / 1e6:.2f}M", f"{twin['macs'] / 1e9:.3f}") if twin else ("", "", "")
        lines.append(
            f"| `{row['model']}` | {se_cells[0]} | {size} | {row['params'] / 1e6:.2f}M | {se_cells[1]} "
            f"| {row['macs'] / 1e9:.3f} | {se_cells[2]} |"
        )
    orphans = [r for r in rows if r["se"] and r["plain_twin"] not in by_name]
    for row in orphans:
        size = "x".join(str(s) for s in row["input"])
        lines.append(f"| | `{row['model']}` | {size} | | {row['params'] / 1e6:.2f}M | | {row['macs'] / 1e9:.3f} |")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from senet.analysis import complexity
    from senet.analysis.complexity import se_stage_numbers
    from senet.models import is_se_model, plain_twin
    from senet.models.registry import SE_KWARGS

    kwargs = model_kwargs(args)
    architecture = {k: v for k, v in kwargs.items() if k not in SE_KWARGS}  # (the rest: SE variant flags)
    if args.add_se:  # the cost of SE retrofitted with senet.add_se (its defaults: the family's SE twin's)
        from senet.interop.retrofit import add_se

        if is_se_model(args.model):
            raise SenetError(
                f"{args.model} already has SE blocks; --add-se adds SE to a plain model: drop --add-se, "
                f"or use its plain twin ('senet info {plain_twin(args.model)} --add-se')"
            )
        # The SE flags are add_se's options (its keywords are SEConfig's field names), the rest create_model's.
        se_options = {SE_KWARGS[k]: kwargs[k] for k in kwargs if k in SE_KWARGS}
        model = build_model_for_counting(args.model, architecture)
        summary = add_se(model, **se_options).se_report.summary
        if not args.json:
            print(summary)
    else:
        model = build_model_for_counting(args.model, kwargs)
    stats = complexity(model, args.input_size)
    twin = None
    if is_se_model(args.model):
        twin_kwargs = {k: v for k, v in kwargs.items() if k in ("layout", "num_classes", "in_chans")}
        twin = complexity(build_model_for_counting(plain_twin(args.model), twin_kwargs), args.input_size)
    if args.json:
        out = {"model": args.model, "kwargs": kwargs, **({"add_se": True} if args.add_se else {}), **stats.as_dict()}
        if twin is not None:
            out["plain_twin"] = {"model": plain_twin(args.model), "params": twin.params, "macs": twin.macs}
        print(json.dumps(out, indent=1, default=list))
        return 0
    size = "x".join(str(s) for s in stats.input_size)
    print(f"{args.model}  input {size}" + (f"  ({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else ""))
    print(f"  params  {stats.params / 1e6:8.2f}M   ({stats.params:,d})")
    print(f"  GMACs   {stats.gmacs:8.3f}    ({stats.macs:,d})")
    if stats.se_blocks:
        print(
            f"  SE      {stats.se_blocks} blocks, {human_count(stats.se_params)} params (+{100 * stats.se_param_overhead:.2f}%), "
            f"{human_count(stats.se_macs)} MACs (+{100 * stats.se_mac_overhead:.2f}%)"
        )
    if twin is not None:
        print(f"  plain twin {plain_twin(args.model)}: {twin.params / 1e6:.2f}M params, {twin.gmacs:.3f} GMACs")
    print()
    # Stages as --se-stages numbers them (ResNet: layer1 .. layer4 are 2 .. 5, conv2_x .. conv5_x).
    # Numbered on the architecture alone: a per-stage reduction does not fit a model with SE in one stage.
    numbers = se_stage_numbers(args.model, architecture)
    print(f"  {'stage':16s} {'output':>16s} {'params':>9s} {'SE params':>9s} {'MACs':>9s} {'SE MACs':>9s} {'SE':>4s}")
    for stage in stats.stages:
        if stage.params == 0 and stage.macs == 0:
            continue  # pooling, dropout
        shape = "x".join(str(s) for s in stage.output_shape)
        label = f"{numbers[stage.name]} ({stage.name})" if stage.name in numbers else stage.name
        print(
            f"  {label:16s} {shape:>16s} {human_count(stage.params):>9s} {human_count(stage.se_params):>9s} "
            f"{human_count(stage.macs):>9s} {human_count(stage.se_macs):>9s} {stage.se_blocks:4d}"
        )
    return 0


def human_count(value: int) -> str:
    """A count with three significant digits and a k / M / G suffix: 28.1M, 2.53M, 3.07k, 640."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:d}"


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
