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


def cmd_models(args: argparse.Namespace) -> int:
    from senet.analysis import complexity
    from senet.models import is_se_model, list_models, plain_twin

    rows = []
    for name in list_models(args.filter):
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
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':24s} {'input':>13s} {'params':>9s} {'GMACs':>8s}  plain twin")
    for row in rows:
        size = "x".join(str(s) for s in row["input"])
        twin = row["plain_twin"] if row["se"] else ""
        print(f"{row['model']:24s} {size:>13s} {row['params'] / 1e6:8.2f}M {row['gmacs']:8.3f}  {twin}")
    print(f"{len(rows)} models; GMACs = multiply-accumulates (the paper's 'GFLOPs') at the input shown")
    return 0


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
    return cmd_models(argparse.Namespace(filter="*", json=False))


# ---------------------------------------------------------------------------------------------------
# senet bench


def cmd_bench(args: argparse.Namespace) -> int:
    from senet.analysis.benchmark import BenchConfig, format_result, run_bench
    from senet.models import is_se_model, plain_twin

    baseline = args.baseline
    if baseline is None and is_se_model(args.model):
        baseline = plain_twin(args.model)
    config = BenchConfig(
        model=args.model,
        baseline=None if baseline == "none" else baseline,
        mode=args.mode,
        batch=args.batch,
        input_size=args.input,
        device=args.device,
        compile=args.compile,
        channels_last=args.channels_last,
        amp=args.amp,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        se_impl=args.se_impl,
        baseline_se_impl=args.baseline_se_impl,
        model_kwargs=model_kwargs(args),
        memory=not args.no_memory,
    )
    progress = None if args.json or args.quiet else (lambda message: print(f"  {message}", file=sys.stderr))
    result = run_bench(config, progress)
    print(json.dumps(result.as_dict(), indent=1) if args.json else format_result(result))
    return 0


# ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="senet", description="Squeeze-and-Excitation Networks for PyTorch")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}

    p = sub.add_parser("models", help="list every registered model with params and GMACs")
    p.add_argument("filter", nargs="?", default="*", help="shell-style pattern, e.g. 'se_*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    commands["models"] = cmd_models

    p = sub.add_parser("info", help="complexity, SE overhead and a per-stage table of one model")
    p.add_argument("model")
    p.add_argument("--input", type=int, help="input side in pixels (default: the model's own, e.g. 224)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_args(p)
    commands["info"] = cmd_info

    p = sub.add_parser(
        "bench",
        help="time (and in training, memory) of a model against a baseline, measured interleaved",
        description="Times MODEL and BASELINE alternately in one process after warm-up and reports median "
        "and min time per step, images/s, training peak memory and the ratio model/baseline. BASELINE "
        "defaults to the plain twin of an SE model ('none': the model alone). Compare the fused and the "
        "straightforward SE on one network with --baseline MODEL --baseline-se-impl naive.",
    )
    p.add_argument("--model", required=True, help="registered model name, e.g. se_resnet50")
    p.add_argument("--baseline", help="model to compare with (default: the plain twin; 'none' for no baseline)")
    p.add_argument("--mode", choices=("infer", "train"), default="infer", help="forward only, or one SGD step")
    p.add_argument("--batch", type=int, default=8, help="images per step (default: 8)")
    p.add_argument("--input", type=int, help="input side in pixels (default: the model's own, e.g. 224)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (warm-up compiles)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for models and inputs")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds, one step of each model per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each model first")
    p.add_argument("--se-impl", choices=("fused", "naive"), default="fused", help="SE implementation of the model")
    p.add_argument("--baseline-se-impl", choices=("fused", "naive"), help="SE implementation of the baseline (default: --se-impl)")
    p.add_argument("--no-memory", action="store_true", help="skip the training memory measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object (model_ms, baseline_ms, ratio, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_model_args(p)
    commands["bench"] = cmd_bench

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
