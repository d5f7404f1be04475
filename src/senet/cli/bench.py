"""`senet bench`: a model's time and memory against a baseline, measured interleaved."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from senet import options
from senet.cli.args import (
    add_amp_arg,
    add_batch_size_arg,
    add_input_size_arg,
    add_model_args,
    model_kwargs,
    non_negative_int,
    positive_int,
)
from senet.errors import SenetError


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
    if args.runtime != ("torch",):
        return cmd_bench_runtimes(args, baseline)
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


def runtime_list(text: str) -> tuple[str, ...]:
    """`--runtime`: torch, or a comma-separated list of the ONNX runtimes."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if names == ("torch",):
        return names
    bad = [name for name in names if name not in options.RUNTIMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give torch, or one or more of {', '.join(options.RUNTIMES)} separated by commas")
    return names


def cmd_bench_runtimes(args: argparse.Namespace, baseline: str | None) -> int:
    """`senet bench --runtime onnxruntime,openvino`: the exported models in each runtime against eager PyTorch."""
    from senet.bench import SHARED_KWARGS
    from senet.interop.runtime_bench import runtime_bench

    unsupported = [flag for flag, on in (("--mode train", args.mode == "train"), ("--compile", args.compile),
                   ("--channels-last", args.channels_last), ("--amp", args.amp not in (None, False, "none")), ("--device cuda", args.device == "cuda"),
                   ("--se-impl naive", args.se_impl == "naive")) if on]
    if unsupported:
        raise SenetError(f"--runtime {','.join(args.runtime)} times fp32 CPU inference of the exported model; drop {', '.join(unsupported)}")
    kwargs = model_kwargs(args)
    progress = None if args.json or args.quiet else (lambda message: print(f"  {message}", file=sys.stderr))
    result = runtime_bench(
        args.model, None if baseline == "none" else baseline, runtimes=args.runtime, batch=args.batch_size,
        input_size=args.input_size, threads=args.threads, repeats=args.repeats, warmup=args.warmup, model_kwargs=kwargs,
        baseline_kwargs={k: v for k, v in kwargs.items() if k in SHARED_KWARGS}, progress=progress,
    )
    print(json.dumps(result.as_dict(), indent=1) if args.json else result.format())
    return 0


def add_parsers(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """`senet bench`."""
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
    p.add_argument("--mode", choices=options.BENCH_MODES, default="infer", help="forward only, or one SGD step")
    add_batch_size_arg(p, default=8, aliases=("--batch",))
    add_input_size_arg(p, aliases=("--input",))
    p.add_argument("--device", choices=options.BENCH_DEVICES, default="cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (warm-up compiles)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for models and inputs")
    add_amp_arg(p, default="none", bare=True, help="autocast precision (a bare --amp: bf16)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--repeats", type=positive_int, default=10, help="timed rounds, one step of each model per round")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed steps of each model first")
    p.add_argument("--se-impl", choices=options.SE_IMPLS, default="fused", help="SE implementation of the model")
    p.add_argument("--baseline-se-impl", choices=options.SE_IMPLS, help="SE implementation of the baseline (default: --se-impl)")
    p.add_argument("--no-memory", action="store_true", help="skip the training memory measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object (model_ms, baseline_ms, ratio, ...)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--runtime", type=runtime_list, default=("torch",), metavar="RUNTIME[,RUNTIME]",
                   help="torch (default), or onnxruntime and/or openvino (comma-separated): the exported models in "
                   "each runtime against eager PyTorch (fp32 inference, CPU)")
    add_model_args(p)
    commands["bench"] = cmd_bench
