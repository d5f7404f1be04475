"""The `senet` command: argument parsing and dispatch only (the work lives in engine/analysis/interop).

Errors a user can cause (SenetError) print as one line `senet: error: ...` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from senet import allocator
from senet.errors import SenetError, or_list

# ---------------------------------------------------------------------------------------------------
# The parser: every subcommand reports its own usage, defaults show in --help.


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
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"usage: {self.prog} [options]  (`{self.prog} --help` lists them)\n{self.prog}: error: "
                     f"{message}{self._suggestion(message)}\n")

    def _suggestion(self, message: str) -> str:
        from senet.errors import did_you_mean

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
    from senet.engine.config import AMP_MODES

    extra: dict[str, Any] = {"nargs": "?", "const": "bf16"} if bare else {}
    parser.add_argument("--amp", choices=AMP_MODES, default=default, help=help, **extra)


def add_output_format_args(parser: argparse.ArgumentParser | Any, *, quiet: str | None = None) -> None:
    """--json (one JSON object on stdout) and, given its help, --quiet."""
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    if quiet is not None:
        parser.add_argument("-q", "--quiet", action="store_true", help=quiet)


# ---------------------------------------------------------------------------------------------------
# Shared flags: the model and its SE variant, mapped onto create_model keywords.


def add_model_args(parser: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    """--model (or positional) plus the SE variant flags, named as the model keywords."""
    from senet.layers import GATES, SE_POSITIONS, SQUEEZES
    from senet.models.resnet import LAYOUTS

    group = parser.add_argument_group("SE variant (SE models only; defaults reproduce the paper)")
    group.add_argument("--reduction", type=reduction_arg,
                       help="reduction ratio r (paper: 16), or one per SE stage, comma-separated (e.g. 16,16,16,8)")
    group.add_argument("--squeeze", choices=SQUEEZES, help="squeeze operator (paper: avg)")
    group.add_argument("--gate", choices=list(GATES), help="excitation gate (paper: sigmoid)")
    group.add_argument("--se-position", choices=SE_POSITIONS, help="SE integration (Fig. 5; paper: standard)")
    group.add_argument("--se-stages", help="comma-separated stages that get SE, paper numbering 2..5 (e.g. 3,4,5)")
    group.add_argument("--no-se-bias", action="store_true", help="SE FCs without bias (the ablation recipe)")
    arch = parser.add_argument_group("architecture")
    arch.add_argument("--layout", choices=LAYOUTS, help="ResNet layout (default: paper)")
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
    "pretrained": "model.pretrained",
    "source": "model.source",
    "log_every": "train.log_every",
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
    if args.pretrained is not None and args.model is None and not (args.resume and os.path.isfile(os.path.join(args.resume, "config.yaml"))):
        overrides["model.name"] = None  # the weights name the network, not the recipe's default model
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from senet.engine.train import prepare_config, resume_target, train

    overrides = train_overrides(args)
    recipe = args.recipe or default_recipe(args.data)
    run, checkpoint = resume_target(args.resume, starting=args.data is not None) if args.resume else (None, None)
    if args.resume and args.output and Path(args.output) != run:
        raise SenetError(f"--resume continues the run in {run}; drop --output or make it the same folder")
    if args.recipe is None and recipe == "paper-imagenet" and run is None:
        # No recipe asked for: the ImageNet schedule, at the input size of the model (and data) at hand.
        overrides.setdefault("data.input_size", None)
    notes: list[str] = []
    config, changes = prepare_config(recipe, overrides, run, notes=notes)
    if changes and not args.quiet:
        print("resuming with changed settings: " + "; ".join(changes))
    for note in notes if not args.quiet else ():
        print(note)
    result = train(config, run or args.output, resume=run is not None, resume_from=checkpoint,
                   overwrite=args.overwrite, quiet=args.quiet)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(result.summary()) if args.json else result.summary_line())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from senet.engine.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint,
        args.data,  # None: the data the run was trained on
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

    run_demo(args.output, epochs=args.epochs, seed=args.seed, jobs=args.jobs, overwrite=args.overwrite)
    return 0


def add_train_args(p: argparse.ArgumentParser) -> None:
    from senet.data.spec import KINDS, data_form
    from senet.engine.config import OPTIMIZERS, SCHEDULES
    from senet.engine.recipes import list_recipes

    p.add_argument("--model", help="registered model name (`senet models` lists them); default: the recipe's")
    p.add_argument("--data", help=" | ".join(map(data_form, KINDS)))
    p.add_argument("--recipe", help=" | ".join([*list_recipes(), "FILE.yaml"]) + " (default: paper-cifar for CIFAR, "
                   "demo for digits, else paper-imagenet at the model's own input size)")
    p.add_argument("--epochs", type=positive_int, help="default: the recipe's")
    add_batch_size_arg(p, help="images per process per step, before accumulation (default: the recipe's)")
    p.add_argument("--lr", type=float, help="learning rate for the global batch as given (no linear scaling)")
    add_input_size_arg(p, help="training crop side; evaluation resizes by the recipe's ratio (256/224) "
                       "(default: the recipe's, else the data's or the model's own)")
    p.add_argument("--output", help="run folder (default: runs/MODEL-DATA-TIME)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN (a run folder, or one of its "
                   "checkpoints/step-N folders) from its newest good checkpoint, or from that checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --output (its checkpoints "
                   "and weights are deleted)")
    p.add_argument("--seed", type=int, help="default: the recipe's (0)")
    add_workers_arg(p, help="data loader processes per training process, at most the cores available "
                    "(default: the recipe's)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (under torchrun: each process's LOCAL_RANK GPU)")
    p.add_argument("--pretrained", metavar="PATH", help="start from these weights (any file `senet convert` reads); "
                   "the classifier is replaced and the input convolution adapted where the data differ")
    p.add_argument("--source", help="the library that wrote --pretrained (default: auto, from the key names)")
    p.add_argument("--log-every", type=positive_int, help="a progress line every N steps when stdout is not a "
                   "terminal; the loss is read from the device this often (default: 50)")
    add_output_format_args(p, quiet="no progress or epoch lines; only the final result line")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--optimizer", choices=OPTIMIZERS)
    opt.add_argument("--momentum", type=float)
    opt.add_argument("--weight-decay", type=float)
    opt.add_argument("--label-smoothing", type=float)
    opt.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    opt.add_argument("--schedule", choices=SCHEDULES)
    opt.add_argument("--warmup-epochs", type=float, help="linear learning-rate warm-up")
    opt.add_argument("--accum-steps", type=positive_int, help="accumulate gradients over this many batches per step")
    run = p.add_argument_group("execution")
    add_amp_arg(run)
    run.add_argument("--channels-last", action="store_true", default=None)
    run.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    run.add_argument("--ema-decay", type=float, help="keep and evaluate an EMA of the weights (e.g. 0.9998)")
    run.add_argument("--sync-bn", action="store_true", default=None, help="synchronised BatchNorm across GPUs")
    run.add_argument("--deterministic", action="store_true", default=None, help="deterministic kernels only")
    run.add_argument("--checkpoint-every", type=non_negative_int, help="also checkpoint every N optimiser steps (always: every epoch)")
    run.add_argument("--skip-bad-images", action="store_true", default=None, help="skip and count unreadable images")
    run.add_argument("--tensorboard", action="store_true", default=None, help="TensorBoard logs in the run folder")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="any recipe setting, e.g. schedule.milestones=[30,60]")
    add_model_args(p)


# ---------------------------------------------------------------------------------------------------
# senet bench


def bench_amp(amp: str | None) -> bool:
    """The benchmark measures float32 or bfloat16 autocast."""
    if amp == "fp16":
        raise SenetError("senet bench measures --amp bf16 (or none); fp16 autocast is not benchmarked")
    return amp == "bf16"


def cmd_bench(args: argparse.Namespace) -> int:
    from senet.bench import BenchConfig, format_result, run_bench
    from senet.models import is_se_model, plain_twin

    baseline = args.baseline
    if baseline is None and is_se_model(args.model):
        baseline = plain_twin(args.model)
    if args.runtime == "onnxruntime":
        return cmd_bench_onnxruntime(args, baseline)
    config = BenchConfig(
        model=args.model,
        baseline=None if baseline == "none" else baseline,
        mode=args.mode,
        batch=args.batch_size,
        input_size=args.input_size,
        device=args.device,
        compile=args.compile,
        channels_last=args.channels_last,
        amp=bench_amp(args.amp),
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
# senet convert / senet predict / senet export: checkpoints in and out (senet.interop)


def cmd_convert(args: argparse.Namespace) -> int:
    from senet.interop.load import convert

    loaded = convert(args.src, args.dst, source=args.source, model=args.model, ema=args.ema, force=args.force)
    found = f" ({loaded.found})" if loaded.found else ""
    print(f"{loaded.recognised.describe()}{found}; wrote {args.dst}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from senet.engine.distributed import DistEnv, resolve_device
    from senet.interop.load import load_model
    from senet.interop.predict import format_prediction, image_files, predict

    device = resolve_device(args.device, DistEnv())
    model = load_model(args.checkpoint, source=args.source, model=args.model, ema=args.ema)
    files, failed = image_files(args.images)
    predictions, bad = predict(model, files, top=args.top, batch_size=args.batch_size, device=device, workers=args.workers)
    for image in failed + bad:
        print(f"senet: error: cannot read image {image.name}: {image.reason}", file=sys.stderr)
    if args.json:
        print(json.dumps([p.as_dict() for p in predictions], indent=1))
    else:
        for prediction in predictions:
            print(format_prediction(prediction))
    return 1 if failed or bad else 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from senet.interop.export import FORMATS, SUFFIXES, export_model
    from senet.interop.load import load_model

    export_format = args.format or SUFFIXES.get(Path(args.output).suffix)
    if export_format is None:
        raise SenetError(f"cannot tell the format from {args.output}; pass --format {or_list(FORMATS)}")
    if args.checkpoint:
        model = load_model(args.checkpoint, source=args.source)
    else:
        from senet.models import create_model

        model = create_model(args.model, **model_kwargs(args))
    result = export_model(model, args.output, format=export_format, opset=args.opset, input_size=args.input_size,
                          static_batch=args.static_batch, batch=args.batch_size, force=args.force)
    for note in result.notes:
        print(f"note: {note}")
    print(result.summary())
    return 0


def cmd_bench_onnxruntime(args: argparse.Namespace, baseline: str | None) -> int:
    """`senet bench --runtime onnxruntime`: the exported models in onnxruntime against eager PyTorch."""
    from senet.bench import SHARED_KWARGS
    from senet.interop.export import onnxruntime_bench

    unsupported = [flag for flag, on in (("--mode train", args.mode == "train"), ("--compile", args.compile),
                   ("--channels-last", args.channels_last), ("--amp", args.amp not in (None, False, "none")), ("--device cuda", args.device == "cuda"),
                   ("--se-impl naive", args.se_impl == "naive")) if on]
    if unsupported:
        raise SenetError(f"--runtime onnxruntime times fp32 CPU inference of the exported model; drop {', '.join(unsupported)}")
    kwargs = model_kwargs(args)
    progress = None if args.json or args.quiet else (lambda message: print(f"  {message}", file=sys.stderr))
    result = onnxruntime_bench(
        args.model, None if baseline == "none" else baseline, batch=args.batch_size, input_size=args.input_size,
        threads=args.threads, repeats=args.repeats, warmup=args.warmup, model_kwargs=kwargs,
        baseline_kwargs={k: v for k, v in kwargs.items() if k in SHARED_KWARGS}, progress=progress,
    )
    print(json.dumps(result.as_dict(), indent=1) if args.json else result.format())
    return 0


def add_interop_parsers(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """The parsers of convert, predict and export."""
    from senet.interop.export import FORMATS, SUFFIXES
    from senet.interop.sources import SOURCES

    sources = f"auto (from the key names; default), {or_list([*SOURCES, 'senet'])}"
    suffixes = ", ".join(SUFFIXES)

    def add_weights_args(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--source", default="auto", help=f"the library that wrote {what}: {sources}")
        p.add_argument("--model", help="the senet model name, where the keys leave it open")
        p.add_argument("--ema", action="store_true", help="take the checkpoint's EMA weights (state_dict_ema)")

    p = sub.add_parser("convert", help="write any SE checkpoint (timm, torchvision, senet.pytorch, hub folder) as a senet .safetensors")
    p.add_argument("src", help="weights file (.pth, .pt, .bin, .pth.tar, .safetensors), hub folder or senet run folder")
    p.add_argument("dst", help="the senet checkpoint to write (.safetensors)")
    add_weights_args(p, "SRC")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    commands["convert"] = cmd_convert

    p = sub.add_parser("predict", help="top-k classes of images with a checkpoint's own preprocessing and class names")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files, or folders (searched recursively)")
    p.add_argument("--checkpoint", required=True, help="any checkpoint `senet convert` reads")
    p.add_argument("--top", type=positive_int, default=5, help="classes per image")
    add_batch_size_arg(p, default=32, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_workers_arg(p, default=0, help="decoding processes (0: in this process)")
    add_weights_args(p, "the checkpoint")
    p.add_argument("--json", action="store_true", help='one JSON list of {"path", "top": [{"class", "index", "prob"}]}')
    commands["predict"] = cmd_predict

    p = sub.add_parser("export", help="export a model to ONNX, TorchScript or a torch.export program, checked against eager")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="any checkpoint `senet convert` reads")
    which.add_argument("--model", help="a registered model with fresh weights (e.g. to time a deployment)")
    p.add_argument("--format", choices=FORMATS, help=f"default: from the --output suffix ({suffixes})")
    p.add_argument("--output", required=True, help=f"file to write ({suffixes})")
    p.add_argument("--opset", type=positive_int, help="ONNX opset version (default: the exporter's)")
    add_input_size_arg(p, help="input side in pixels (default: the checkpoint's or model's)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension (default: dynamic)")
    add_batch_size_arg(p, default=2, help="batch of the example input")
    p.add_argument("--source", default="auto", help=f"the library that wrote the checkpoint: {sources}")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    add_model_args(p)
    commands["export"] = cmd_export


# ---------------------------------------------------------------------------------------------------
# senet ablate (the paper's ablations as sweeps of training runs)


def cmd_ablate(args: argparse.Namespace) -> int:
    from senet.analysis.ablation import GRID, STUDIES, ablate, check_study, list_commands

    if args.resume:
        raise SenetError("senet ablate resumes interrupted runs by itself: drop --resume and repeat the command")
    studies = [name.strip() for name in (args.study or (GRID if args.grid else "")).split(",") if name.strip()]
    if not studies:
        raise SenetError(f"name a study: {or_list([*STUDIES, GRID])} (with --grid)")
    for name in studies:
        check_study(name)
    if args.grid and GRID not in studies:
        raise SenetError("--grid defines the custom study: `senet ablate grid --grid KEY=V1,V2 ...`")
    if args.seeds < 1:
        raise SenetError(f"--seeds takes the number of seeds per variant (>= 1), got {args.seeds}")
    if args.only is not None and (args.list or args.collect):
        raise SenetError("--only trains one run; use it without --list and --collect")
    overrides = train_overrides(args)
    overrides.pop("train.seed", None)
    first = args.seed or 0
    recipe = args.recipe or default_recipe(args.data)
    model = args.model
    output = args.output or f"runs/ablate-{'-'.join(studies)}-{model or recipe}"
    settings = dict(studies=studies, model=model, recipe=recipe, overrides=overrides,
                    seeds=list(range(first, first + args.seeds)), output=output, grid=args.grid or ())
    if args.list:
        flags = {key: "--" + flag.replace("_", "-") for flag, key in TRAIN_FLAGS.items()}
        flags |= {f"model.kwargs.{key}": "--" + key.replace("_", "-") for key in MODEL_FLAGS}
        commands = list_commands(**settings, flags=flags)
        print("\n".join(commands))
        print(f"# {len(commands)} runs, numbered 0 to {len(commands) - 1} in this order (line I+1 is run I): "
              f"`senet ablate ... --only I` trains run I (e.g. a Slurm array --array=0-{len(commands) - 1} "
              "with --only $SLURM_ARRAY_TASK_ID); repeat the command without --only, or with --collect, for the table",
              file=sys.stderr)
        return 0
    ablate(**settings, jobs=args.jobs or 1, only=args.only, collect_only=args.collect)
    return 0


def add_ablate_args(p: argparse.ArgumentParser) -> None:
    from senet.analysis.ablation import GRID, STUDIES

    tables = [study.table.removeprefix("Table ") for study in STUDIES.values()]
    p.add_argument("study", nargs="?", help=" | ".join([*STUDIES, GRID]) + f" (Tables {tables[0]}-{tables[-1]}; "
                   "several joined by commas share their identical runs, e.g. reduction,gate)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant: --seed, --seed + 1, ... (default: 1)")
    p.add_argument("--jobs", type=int, help="runs trained at once, the cores shared out between them (default: 1)")
    p.add_argument("--grid", nargs="+", metavar="KEY=V1,V2", help="the custom study: every combination of "
                   "create_model keywords, e.g. --grid reduction=4,8 gate=sigmoid,tanh (tuples join with +: se_stages=3+4)")
    p.add_argument("--list", action="store_true", help="print each run's complete `senet train` command, one a line")
    p.add_argument("--only", type=int, metavar="I", help="train only run I (numbered from 0 as --list prints them)")
    p.add_argument("--collect", action="store_true", help="train nothing: gather the finished runs into the results")
    add_train_args(p)


# ---------------------------------------------------------------------------------------------------
# senet analyze (the paper's Sec. 7.2 studies of a trained network)


def cmd_analyze_excitation(args: argparse.Namespace) -> int:
    from senet.analysis.excitation import excitation_study

    blocks = None if args.blocks in (None, ["all"]) else [name for item in args.blocks for name in item.split(",") if name]
    classes = [name for name in args.classes.split(",") if name] if args.classes else None
    output = args.output or f"runs/excitation-{Path(args.checkpoint).expanduser().resolve().name}"
    study = excitation_study(
        args.checkpoint, args.data, output=output, blocks=blocks, images_per_class=args.images_per_class or None,
        channels=args.channels, classes=classes, batch_size=args.batch_size, workers=args.workers, device=args.device,
        ema=args.ema, overwrite=args.overwrite, progress=not args.quiet,
    )
    print(f"{study.model}: excitation of {len(study.stats.blocks)} SE blocks over {study.images} images")
    print(study.summary())
    print(f"wrote {study.json_path}, {', '.join(str(path) for path in study.figures)}")
    return 0


def cmd_analyze_se_drop(args: argparse.Namespace) -> int:
    from senet.analysis.se_drop import se_drop_study

    study = se_drop_study(
        args.checkpoint, args.data, replace=args.replace, batch_size=args.batch_size, workers=args.workers,
        device=args.device, amp=args.amp, input_size=args.input_size, ema=args.ema, progress=not args.quiet,
    )
    print(json.dumps(study.as_dict(), indent=1) if args.json else study.format())
    return 0


def add_analyze_parsers(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """`senet analyze excitation` and `senet analyze se-drop`."""
    from senet.analysis.excitation import PAPER_CHANNELS, PAPER_IMAGES_PER_CLASS
    from senet.analysis.se_drop import REPLACEMENTS

    group = sub.add_parser("analyze", help="the paper's studies of a trained SE network (Sec. 7.2): excitation, se-drop")
    studies = group.add_subparsers(dest="study", metavar="STUDY", required=True, parser_class=Parser)

    def add_common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", required=True, help="any checkpoint `senet eval` takes (run folder, checkpoint "
                       "folder, .safetensors) or `senet convert` reads")
        p.add_argument("--data", help="same forms as for train; its validation split is used "
                       "(default: the data the run was trained on)")
        add_batch_size_arg(p, default=128)
        add_workers_arg(p, default=4)
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--ema", action="store_true", help="analyse the EMA weights")

    p = studies.add_parser("excitation", help="per-class excitation per SE block (Figs. 6-7): JSON and PNGs",
                           description="The excitation s of the SE blocks over the first N validation images of "
                           "each class: DIR/excitation.json, DIR/excitation.png (Fig. 6: per-class means over "
                           "sampled channels) and DIR/excitation_spread.png (Fig. 7: mean ± std of a few classes).")
    add_common(p)
    p.add_argument("--blocks", nargs="+", metavar="NAME", help="SE blocks by their paper names (SE_4_2, ...) or "
                   "module paths, or all (default: all)")
    p.add_argument("--images-per-class", type=non_negative_int, default=PAPER_IMAGES_PER_CLASS,
                   help="validation images of each class (0: all)")
    p.add_argument("--channels", type=positive_int, default=PAPER_CHANNELS, help="channels per block in the figures, "
                   "sampled evenly")
    p.add_argument("--classes", help="comma-separated class names for the Fig. 7 figure (default: the first four)")
    p.add_argument("--output", help="folder for the results (default: runs/excitation-CHECKPOINT)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier analysis in --output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(_study=cmd_analyze_excitation)

    p = studies.add_parser("se-drop", help="errors with each stage's SE switched off, and the last blocks' cumulatively",
                           description="Evaluates the checkpoint as `senet eval` does: as it is, with the SE blocks of "
                           "each stage switched off in turn, then cumulatively from the last block back. Each row: "
                           "top-1/top-5 error, the change against the intact network, the removed blocks' parameters.")
    add_common(p)
    p.add_argument("--replace", choices=REPLACEMENTS, default="one", help="what the excitation s of a switched-off "
                   "block becomes: 1 (the block is the identity) or its per-channel mean over the data")
    add_input_size_arg(p, help="evaluation crop (default: the training input size)")
    add_amp_arg(p, default="none", help="autocast precision")
    add_output_format_args(p, quiet="no progress bar")
    p.set_defaults(_study=cmd_analyze_se_drop)
    commands["analyze"] = lambda args: args._study(args)


# ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from senet import __version__
    from senet.bench import DEVICES, MODES
    from senet.interop.export import RUNTIMES
    from senet.layers import SE_IMPLS

    parser = Parser(prog="senet", description="Squeeze-and-Excitation Networks for PyTorch")
    parser.add_argument("--version", action="version", version=f"senet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}

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

    p = sub.add_parser("train", help="train a model (also under torchrun --nproc_per_node N -m senet train ...)")
    add_train_args(p)
    commands["train"] = cmd_train

    p = sub.add_parser("eval", help="top-1 / top-5 error of a trained model on a dataset's validation split")
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or .safetensors file")
    p.add_argument("--data", help="same forms as for train; its validation split is used (folder:PATH: PATH/val/ "
                   "or PATH's own class folders) (default: the data the run was trained on)")
    add_input_size_arg(p, help="evaluation crop (default: the training input size)")
    add_batch_size_arg(p, default=128)
    add_workers_arg(p, default=4)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_amp_arg(p, default="none", help="autocast precision")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument("--skip-bad-images", action="store_true", help="skip and count unreadable images")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    commands["eval"] = cmd_eval

    p = sub.add_parser("demo", help="train SE-ResNet-20 and ResNet-20 on the built-in digits; table and plots")
    p.add_argument("--output", default="runs/demo", help="where runs and figures go")
    p.add_argument("--overwrite", action="store_true", help="replace the runs of an earlier demo in --output")
    p.add_argument("--epochs", type=positive_int, help="epochs per network (default: the demo recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=positive_int, help="networks trained at once (default: 2 on 2+ cores)")
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
    p.add_argument("--mode", choices=MODES, default="infer", help="forward only, or one SGD step")
    add_batch_size_arg(p, default=8, aliases=("--batch",))
    add_input_size_arg(p, aliases=("--input",))
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (warm-up compiles)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for models and inputs")
    add_amp_arg(p, default="none", bare=True, help="autocast precision (a bare --amp: bf16)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--repeats", type=positive_int, default=10, help="timed rounds, one step of each model per round")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed steps of each model first")
    p.add_argument("--se-impl", choices=SE_IMPLS, default="fused", help="SE implementation of the model")
    p.add_argument("--baseline-se-impl", choices=SE_IMPLS, help="SE implementation of the baseline (default: --se-impl)")
    p.add_argument("--no-memory", action="store_true", help="skip the training memory measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object (model_ms, baseline_ms, ratio, ...)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="onnxruntime: the exported models in onnxruntime against eager PyTorch (inference, CPU)")
    add_model_args(p)
    commands["bench"] = cmd_bench

    add_interop_parsers(sub, commands)

    p = sub.add_parser(
        "ablate",
        help="the paper's ablations (Tables 10-16) as sweeps of training runs, with seeds and error bars",
        description="Trains each variant of STUDY and the plain twin at every seed as ordinary run folders "
        "DIR/<variant>/seed-<s>; a repeated call skips finished runs and resumes interrupted ones. Writes "
        "DIR/results.csv, results.md and results.png. Train flags are those of `senet train`.",
    )
    add_ablate_args(p)
    commands["ablate"] = cmd_ablate

    add_analyze_parsers(sub, commands)

    parser.set_defaults(_commands=commands, _parsers=sub.choices)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`; a flag no command knows is reported by that command's parser (its usage, a suggestion)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args._parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
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
