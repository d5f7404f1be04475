"""The `senet` command: argument parsing and dispatch only (the work lives in engine/analysis/interop).

Errors a user can cause (SenetError) print as one line `senet: error: ...` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from senet.errors import SenetError

# ---------------------------------------------------------------------------------------------------
# Shared flags: the model and its SE variant, mapped onto create_model keywords.


def add_model_args(parser: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    """--model (or positional) plus the SE variant flags, named as the model keywords."""
    group = parser.add_argument_group("SE variant (SE models only; defaults reproduce the paper)")
    group.add_argument("--reduction", type=float, help="reduction ratio r (paper: 16)")
    group.add_argument("--squeeze", choices=("avg", "max", "none"), help="squeeze operator (paper: avg)")
    group.add_argument("--gate", choices=("sigmoid", "tanh", "relu", "hard_sigmoid"), help="excitation gate")
    group.add_argument(
        "--se-position", choices=("standard", "pre", "post", "identity", "3x3"), help="SE integration (Fig. 5)"
    )
    group.add_argument("--se-stages", help="comma-separated stages that get SE, paper numbering 2..5 (e.g. 3,4,5)")
    group.add_argument("--no-se-bias", action="store_true", help="SE FCs without bias (the ablation recipe)")
    arch = parser.add_argument_group("architecture")
    arch.add_argument("--layout", choices=("paper", "torchvision"), help="ResNet layout (default: paper)")
    arch.add_argument("--num-classes", type=int, help="classifier outputs")
    arch.add_argument("--in-chans", type=int, help="input channels")


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The create_model keywords the flags of `add_model_args` ask for (flags left unset are omitted)."""
    kwargs: dict[str, Any] = {}
    if args.reduction is not None:
        kwargs["reduction"] = int(args.reduction) if float(args.reduction).is_integer() else args.reduction
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
                "gmacs": round(stats.gmacs, 4),
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
        print(f"{row['model']:24s} {size:>13s} {row['params'] / 1e6:8.2f}M {row['gmacs']:8.3f}  {twin}")
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
        se_cells = (f"`{twin['model']}`", f"{twin['params'] / 1e6:.2f}M", f"{twin['gmacs']:.3f}") if twin else ("", "", "")
        lines.append(
            f"| `{row['model']}` | {se_cells[0]} | {size} | {row['params'] / 1e6:.2f}M | {se_cells[1]} "
            f"| {row['gmacs']:.3f} | {se_cells[2]} |"
        )
    orphans = [r for r in rows if r["se"] and r["plain_twin"] not in by_name]
    for row in orphans:
        size = "x".join(str(s) for s in row["input"])
        lines.append(f"| | `{row['model']}` | {size} | | {row['params'] / 1e6:.2f}M | | {row['gmacs']:.3f} |")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from senet.analysis import complexity
    from senet.models import is_se_model, plain_twin

    kwargs = model_kwargs(args)
    stats = complexity(build_model_for_counting(args.model, kwargs), args.input)
    twin = None
    if is_se_model(args.model):
        twin_kwargs = {k: v for k, v in kwargs.items() if k in ("layout", "num_classes", "in_chans")}
        twin = complexity(build_model_for_counting(plain_twin(args.model), twin_kwargs), args.input)
    if args.json:
        out = {"model": args.model, "kwargs": kwargs, **stats.as_dict()}
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
            f"  SE      {stats.se_blocks} blocks, {stats.se_params / 1e6:.2f}M params "
            f"(+{100 * stats.se_param_overhead:.1f}%), {stats.se_macs / 1e9:.4f} GMACs (+{100 * stats.se_mac_overhead:.2f}%)"
        )
    if twin is not None:
        print(f"  plain twin {plain_twin(args.model)}: {twin.params / 1e6:.2f}M params, {twin.gmacs:.3f} GMACs")
    print()
    print(f"  {'stage':10s} {'output':>16s} {'params':>10s} {'SE params':>10s} {'MMACs':>10s} {'SE MMACs':>9s} {'SE':>4s}")
    for stage in stats.stages:
        if stage.params == 0 and stage.macs == 0:
            continue  # pooling, dropout
        shape = "x".join(str(s) for s in stage.output_shape)
        print(
            f"  {stage.name:10s} {shape:>16s} {stage.params / 1e6:9.3f}M {stage.se_params / 1e6:9.3f}M "
            f"{stage.macs / 1e6:10.1f} {stage.se_macs / 1e6:9.2f} {stage.se_blocks:4d}"
        )
    return 0


# ---------------------------------------------------------------------------------------------------
# senet demo


def cmd_demo(args: argparse.Namespace) -> int:
    """The zoo and the cost of SE on ResNet-50 (Table 2)."""
    from senet.analysis import complexity

    print("SE-ResNet-50 vs ResNet-50 at 224x224 (paper Table 2: 28.1M / 3.87 vs 25.6M / 3.86 GFLOPs)")
    for name in ("resnet50", "se_resnet50"):
        stats = complexity(build_model_for_counting(name, {}))
        print(f"  {name:12s} {stats.params / 1e6:6.2f}M params  {stats.gmacs:.3f} GMACs")
    print()
    return cmd_models(argparse.Namespace(filter="*", json=False, markdown=False))


# ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="senet", description="Squeeze-and-Excitation Networks for PyTorch")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}

    p = sub.add_parser("models", help="list every registered model with params and GMACs")
    p.add_argument("filter", nargs="?", default="*", help="shell-style pattern, e.g. 'se_*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (as in the README)")
    commands["models"] = cmd_models

    p = sub.add_parser("info", help="complexity, SE overhead and a per-stage table of one model")
    p.add_argument("model")
    p.add_argument("--input", type=int, help="input side in pixels (default: the model's own, e.g. 224)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_args(p)
    commands["info"] = cmd_info

    p = sub.add_parser("demo", help="the built-in demonstration")
    commands["demo"] = cmd_demo

    parser.set_defaults(_commands=commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args._commands[args.command](args)
    except SenetError as error:
        print(f"senet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("senet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `senet models | head`
        sys.stderr.close()
        return 0
