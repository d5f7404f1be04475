"""The `senet` command: argument parsing and dispatch only (the work lives in engine/analysis/interop).

Errors a user can cause (SenetError) print as one line `senet: error: ...` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
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
# senet train / senet eval / senet demo

# Dedicated `senet train` flags -> RunConfig settings (every other setting: --set section.key=value).
TRAIN_FLAGS = {
    "model": "model.name",
    "data": "data.spec",
    "epochs": "schedule.epochs",
    "batch_size": "train.batch_size",
    "input_size": "data.input_size",
    "seed": "train.seed",
    "workers": "data.workers",
    "device": "train.device",
    "optimizer": "optim.name",
    "momentum": "optim.momentum",
    "weight_decay": "optim.weight_decay",
    "label_smoothing": "optim.label_smoothing",
    "grad_clip": "optim.grad_clip",
    "schedule": "schedule.name",
    "warmup_epochs": "schedule.warmup_epochs",
    "accum_steps": "train.accum_steps",
    "amp": "train.amp",
    "channels_last": "train.channels_last",
    "compile": "train.compile",
    "ema_decay": "train.ema_decay",
    "sync_bn": "train.sync_bn",
    "deterministic": "train.deterministic",
    "checkpoint_every": "train.checkpoint_every",
    "skip_bad_images": "data.skip_bad_images",
    "tensorboard": "train.tensorboard",
}


def default_recipe(data: str | None) -> str:
    """paper-cifar for CIFAR, demo for digits, paper-imagenet otherwise."""
    kind = (data or "").split(":")[0]
    return {"cifar10": "paper-cifar", "cifar100": "paper-cifar", "digits": "demo"}.get(kind, "paper-imagenet")


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gives explicitly (flags left unset are omitted)."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in args.set or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise SenetError(f"--set takes section.key=value (e.g. optim.nesterov=true), got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    for flag, key in TRAIN_FLAGS.items():
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.lr is not None:  # an explicit rate is the rate: no linear scaling by batch size
        overrides["optim.lr"] = args.lr
        overrides["optim.lr_batch"] = None
    for key, value in model_kwargs(args).items():
        overrides[f"model.kwargs.{key}"] = list(value) if isinstance(value, tuple) else value
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from senet.engine.train import prepare_config, train

    overrides = train_overrides(args)
    recipe = args.recipe or default_recipe(args.data)
    config, changes = prepare_config(recipe, overrides, args.resume)
    if args.resume and args.output and args.output != args.resume:
        raise SenetError("--resume DIR continues the run in DIR; drop --output or make it the same folder")
    if changes and not args.quiet:
        print("resuming with changed settings: " + "; ".join(changes))
    train(config, args.resume or args.output, resume=args.resume is not None, quiet=args.quiet)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from senet.engine.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        input_size=args.input_size,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        amp=args.amp,
        ema=args.ema,
        skip_bad_images=args.skip_bad_images,
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun: every process evaluated a shard; rank 0 reports
        return 0
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['model']} on {result['data']} ({result['images']} images, input {result['input_size']}): "
        f"top-1 error {result['top1_err']:.2f}%, top-5 error {result['top5_err']:.2f}%, loss {result['loss']:.4f}, "
        f"{result['images_per_s']:.0f} images/s"
        + (f" ({result['bad_images']} unreadable images skipped)" if result["bad_images"] else "")
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """SE-ResNet-20 vs ResNet-20 trained on the built-in digits; table and figures."""
    from senet.engine.demo import run_demo

    run_demo(args.output, epochs=args.epochs, seed=args.seed, jobs=args.jobs)
    return 0


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="registered model name (`senet models` lists them); default: the recipe's")
    p.add_argument("--data", help="digits | synthetic[:classes=N,train=N,val=N,size=N] | folder:PATH | cifar10:PATH | cifar100:PATH")
    p.add_argument("--recipe", help="paper-imagenet | paper-cifar | paper-mobile | demo | FILE.yaml "
                   "(default: paper-cifar for CIFAR, demo for digits, else paper-imagenet)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="images per process per step (before accumulation)")
    p.add_argument("--lr", type=float, help="learning rate for the global batch as given (no linear scaling)")
    p.add_argument("--input-size", type=int, help="training crop side; evaluation resizes by the recipe's ratio (256/224)")
    p.add_argument("--output", help="run folder (default: runs/MODEL-DATA-TIME)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest good checkpoint (starts it if DIR has none)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="data loader processes per training process")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (under torchrun: each process's LOCAL_RANK GPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--optimizer", choices=("sgd", "adamw"))
    opt.add_argument("--momentum", type=float)
    opt.add_argument("--weight-decay", type=float)
    opt.add_argument("--label-smoothing", type=float)
    opt.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    opt.add_argument("--schedule", choices=("step", "cosine", "plateau", "constant"))
    opt.add_argument("--warmup-epochs", type=float, help="linear learning-rate warm-up")
    opt.add_argument("--accum-steps", type=int, help="accumulate gradients over this many batches per step")
    run = p.add_argument_group("execution")
    run.add_argument("--amp", choices=("none", "bf16", "fp16"), help="autocast precision (fp16: GPU, with a grad scaler)")
    run.add_argument("--channels-last", action="store_true", default=None)
    run.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    run.add_argument("--ema-decay", type=float, help="keep and evaluate an EMA of the weights (e.g. 0.9998)")
    run.add_argument("--sync-bn", action="store_true", default=None, help="synchronised BatchNorm across GPUs")
    run.add_argument("--deterministic", action="store_true", default=None, help="deterministic kernels only")
    run.add_argument("--checkpoint-every", type=int, help="also checkpoint every N optimiser steps (always: every epoch)")
    run.add_argument("--skip-bad-images", action="store_true", default=None, help="skip and count unreadable images")
    run.add_argument("--tensorboard", action="store_true", default=None, help="TensorBoard logs in the run folder")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="any recipe setting, e.g. schedule.milestones=[30,60]")
    add_model_args(p)


# ---------------------------------------------------------------------------------------------------
# senet bench


def cmd_bench(args: argparse.Namespace) -> int:
    from senet.bench import BenchConfig, format_result, run_bench
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
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (as in the README)")
    commands["models"] = cmd_models

    p = sub.add_parser("info", help="complexity, SE overhead and a per-stage table of one model")
    p.add_argument("model")
    p.add_argument("--input", type=int, help="input side in pixels (default: the model's own, e.g. 224)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_args(p)
    commands["info"] = cmd_info

    p = sub.add_parser("train", help="train a model (also under torchrun --nproc_per_node N -m senet train ...)")
    add_train_args(p)
    commands["train"] = cmd_train

    p = sub.add_parser("eval", help="top-1 / top-5 error of a trained model on a dataset's validation split")
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or .safetensors file")
    p.add_argument("--data", required=True, help="same forms as for train; its validation split is used")
    p.add_argument("--input-size", type=int, help="evaluation crop (default: the training input size)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="loader processes (default: up to 4)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument("--skip-bad-images", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    commands["eval"] = cmd_eval

    p = sub.add_parser("demo", help="train SE-ResNet-20 and ResNet-20 on the built-in digits; table and plots")
    p.add_argument("--output", default="runs/demo", help="where runs and figures go (default: runs/demo)")
    p.add_argument("--epochs", type=int, help="epochs per network (default: the demo recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, help="networks trained at once (default: 2 on 2+ cores)")
    commands["demo"] = cmd_demo

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
