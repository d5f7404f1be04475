"""`senet eval`: the top-1 / top-5 error of a trained model on a validation split."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from senet.cli.args import add_amp_arg, add_batch_size_arg, add_input_size_arg, add_workers_arg
from senet.errors import SenetError


def cmd_eval(args: argparse.Namespace) -> int:
    from senet.engine.evaluate import evaluate_network, format_evaluation
    from senet.interop.load import load_for_evaluation
    from senet.interop.runtimes import is_exported, open_exported

    device = args.device
    if is_exported(args.checkpoint):  # an exported (or quantized) file, run in --runtime on the CPU
        if args.input_size is not None or args.ema:
            raise SenetError("--input-size and --ema do not apply to an exported file (its input size is fixed)")
        loaded, device = open_exported(args.checkpoint, runtime=args.runtime), "cpu"
    else:
        loaded = load_for_evaluation(args.checkpoint, ema=args.ema)
    result = evaluate_network(
        loaded,
        args.data,  # None: the data the run was trained on
        input_size=args.input_size,
        batch_size=args.batch_size,
        workers=args.workers,
        device=device,
        amp=args.amp,
        skip_bad_images=args.skip_bad_images,
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun: every process evaluated a shard; rank 0 reports
        return 0
    print(json.dumps(result) if args.json else format_evaluation(result))
    return 0


def add_parsers(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """`senet eval`."""
    p = sub.add_parser("eval", help="top-1 / top-5 error of a trained model on a dataset's validation split")
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or .safetensors file, or an "
                   ".onnx file of senet export / senet quantize")
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="what runs an .onnx --checkpoint (default: onnxruntime)")
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
