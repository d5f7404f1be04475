"""`senet train`, `senet demo` and `senet ablate`: training runs (senet.engine) and sweeps of them (senet.analysis.ablation)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from senet import options
from senet.cli.args import (
    MODEL_FLAGS,
    add_amp_arg,
    add_batch_size_arg,
    add_input_size_arg,
    add_model_args,
    add_output_format_args,
    add_workers_arg,
    model_kwargs,
    non_negative_int,
    positive_int,
)
from senet.errors import SenetError, or_list


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
    "add_se": "model.add_se",
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




def cmd_demo(args: argparse.Namespace) -> int:
    """SE-ResNet-20 vs ResNet-20 trained on the built-in digits; table and figures."""
    from senet.analysis.demo import run_demo

    run_demo(args.output, epochs=args.epochs, seed=args.seed, jobs=args.jobs, overwrite=args.overwrite)
    return 0


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="registered model name (`senet models` lists them); default: the recipe's")
    p.add_argument("--data", help=" | ".join(map(options.data_form, options.DATA_KINDS)))
    p.add_argument("--recipe", help=" | ".join([*options.list_recipes(), "FILE.yaml"]) + " (default: paper-cifar for CIFAR, "
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
    p.add_argument("--pretrained", metavar="PATH|NAME", help="start from these weights (any file `senet convert` "
                   "reads, or a model name whose released weights are in the hub / torch hub caches, e.g. "
                   "seresnet50.a1_in1k); the classifier is replaced and the input convolution adapted where the data differ")
    p.add_argument("--source", help="the library that wrote --pretrained (default: auto, from the key names)")
    p.add_argument("--add-se", nargs="?", const="identity", choices=("identity", "default"), metavar="INIT",
                   help="add SE blocks to the --pretrained plain network (its SE twin is trained); INIT identity "
                   "(the default: the network starts computing exactly what the pretrained one did) or default "
                   "(the paper's He initialisation; each gate starts near 1/2)")
    p.add_argument("--log-every", type=positive_int, help="a progress line every N steps when stdout is not a "
                   "terminal; the loss is read from the device this often (default: 50)")
    add_output_format_args(p, quiet="no progress or epoch lines; only the final result line")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--optimizer", choices=options.OPTIMIZERS)
    opt.add_argument("--momentum", type=float)
    opt.add_argument("--weight-decay", type=float)
    opt.add_argument("--label-smoothing", type=float)
    opt.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    opt.add_argument("--schedule", choices=options.SCHEDULES)
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
# senet ablate (the paper's ablations as sweeps of training runs)


def cmd_ablate(args: argparse.Namespace) -> int:
    from senet.analysis.ablation import ablate, check_study, list_commands

    if args.resume:
        raise SenetError("senet ablate resumes interrupted runs by itself: drop --resume and repeat the command")
    studies = [name.strip() for name in (args.study or (options.GRID if args.grid else "")).split(",") if name.strip()]
    if not studies:
        raise SenetError(f"name a study: {or_list([*options.STUDY_TABLES, options.GRID])} (with --grid)")
    for name in studies:
        check_study(name)
    if args.grid and options.GRID not in studies:
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
    try:
        ablate(**settings, jobs=args.jobs or 1, only=args.only, collect_only=args.collect)
    except KeyboardInterrupt:  # (the runs' own message would say `senet train --resume` of one run)
        raise KeyboardInterrupt(
            "the finished runs are kept and each interrupted run keeps its newest checkpoint\n"
            f"continue the sweep with the same command: {shlex.join(['senet', *args._argv])}"
        ) from None
    return 0


def add_ablate_args(p: argparse.ArgumentParser) -> None:
    tables = [table.removeprefix("Table ") for table in options.STUDY_TABLES.values()]
    p.add_argument("study", nargs="?", help=" | ".join([*options.STUDY_TABLES, options.GRID]) + f" (Tables {tables[0]}-{tables[-1]}; "
                   "several joined by commas share their identical runs, e.g. reduction,gate)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant: --seed, --seed + 1, ... (default: 1)")
    p.add_argument("--jobs", type=int, help="runs trained at once, the cores shared out between them (default: 1)")
    p.add_argument("--grid", nargs="+", metavar="KEY=V1,V2", help="the custom study: every combination of "
                   "create_model keywords, e.g. --grid reduction=4,8 gate=sigmoid,tanh (tuples join with +: se_stages=3+4)")
    p.add_argument("--list", action="store_true", help="print each run's complete `senet train` command, one a line")
    p.add_argument("--only", type=int, metavar="I", help="train only run I (numbered from 0 as --list prints them)")
    p.add_argument("--collect", action="store_true", help="train nothing: gather the finished runs into the results")
    add_train_args(p)


def add_parsers(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """`senet train`, `senet demo` and `senet ablate`."""
    p = sub.add_parser("train", help="train a model (also under torchrun --nproc_per_node N -m senet train ...)")
    add_train_args(p)
    commands["train"] = cmd_train

    p = sub.add_parser("demo", help="train SE-ResNet-20 and ResNet-20 on the built-in digits; table and plots")
    p.add_argument("--output", default="runs/demo", help="where runs and figures go")
    p.add_argument("--overwrite", action="store_true", help="replace the runs of an earlier demo in --output")
    p.add_argument("--epochs", type=positive_int, help="epochs per network (default: the demo recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=positive_int, help="networks trained at once (default: 2 on 2+ cores)")
    commands["demo"] = cmd_demo

    p = sub.add_parser(
        "ablate",
        help="the paper's ablations (Tables 10-16) as sweeps of training runs, with seeds and error bars",
        description="Trains each variant of STUDY and the plain twin at every seed as ordinary run folders "
        "DIR/<variant>/seed-<s>; a repeated call skips finished runs and resumes interrupted ones. Writes "
        "DIR/results.csv, results.md and results.png. Train flags are those of `senet train`.",
    )
    add_ablate_args(p)
    commands["ablate"] = cmd_ablate
