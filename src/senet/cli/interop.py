"""`senet convert`, `senet predict` and `senet export`: checkpoints in and out (senet.interop)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from senet import options
from senet.cli.args import add_batch_size_arg, add_input_size_arg, add_model_args, add_workers_arg, model_kwargs, positive_int
from senet.errors import SenetError, or_list


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

    from senet.interop.runtimes import ExportedClassifier, is_exported

    if is_exported(args.checkpoint):  # an exported (or quantized) file: its own preprocessing and class names
        device, model = "cpu", ExportedClassifier(args.checkpoint, args.runtime)
    else:
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

    from senet.interop.export import export_model
    from senet.interop.load import load_model

    export_format = args.format or options.EXPORT_SUFFIXES.get(Path(args.output).suffix)
    if export_format is None:
        raise SenetError(f"cannot tell the format from {args.output}; pass --format {or_list(options.EXPORT_FORMATS)}")
    if args.checkpoint:
        model = load_model(args.checkpoint, source=args.source)
    else:
        from senet.models import create_model

        model = create_model(args.model, **model_kwargs(args))
    config = None if args.checkpoint else {"model": args.model, "model_kwargs": model_kwargs(args)}
    result = export_model(model, args.output, format=export_format, opset=args.opset, input_size=args.input_size,
                          static_batch=args.static_batch, batch=args.batch_size, force=args.force, config=config,
                          plain_form=args.plain_form)
    for note in result.notes:
        print(f"note: {note}")
    print(result.summary())
    return 0



def cmd_quantize(args: argparse.Namespace) -> int:
    from senet.interop.load import load_model
    from senet.interop.quantize import quantize_model

    if Path(args.output).suffix != ".onnx":
        raise SenetError(f"--output {args.output}: senet quantize writes ONNX; name it *.onnx")
    model = load_model(args.checkpoint, source=args.source)
    result = quantize_model(model, args.data, args.output, calibration_images=args.calibration_images,
                            quantize_se=args.quantize_se, force=args.force, batch_size=args.batch_size, workers=args.workers)
    print(result.summary())
    return 0


def add_parsers(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """The parsers of convert, predict and export."""
    sources = f"auto (from the key names; default), {or_list([*options.SOURCES, 'senet'])}"
    suffixes = ", ".join(options.EXPORT_SUFFIXES)

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
    p.add_argument("--checkpoint", required=True, help="any checkpoint `senet convert` reads, or an .onnx file of "
                   "senet export / senet quantize (its own preprocessing and class names)")
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="what runs an .onnx --checkpoint (default: onnxruntime)")
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
    p.add_argument("--format", choices=options.EXPORT_FORMATS, help=f"default: from the --output suffix ({suffixes})")
    p.add_argument("--output", required=True, help=f"file to write ({suffixes})")
    p.add_argument("--opset", type=positive_int, help="ONNX opset version (default: the exporter's)")
    add_input_size_arg(p, help="input side in pixels (default: the checkpoint's or model's)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension (default: dynamic)")
    add_batch_size_arg(p, default=2, help="batch of the example input")
    p.add_argument("--source", default="auto", help=f"the library that wrote the checkpoint: {sources}")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    p.add_argument("--plain-form", action="store_true", help="ONNX: keep the exporter's SE graph (ReduceMean/ReduceSum "
                   "squeeze, broadcast Mul) instead of onnxruntime's blocked-layout form")
    add_model_args(p)
    commands["export"] = cmd_export

    p = sub.add_parser("quantize", help="static INT8 quantization of a trained model as ONNX (QDQ), SE blocks in float")
    p.add_argument("--checkpoint", required=True, help="any checkpoint `senet convert` reads")
    p.add_argument("--data", required=True, help="the images to calibrate on, same forms as for train (its training split)")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--calibration-images", type=positive_int, default=256, help="images to calibrate on (default 256)")
    p.add_argument("--quantize-se", action="store_true", help="quantize the SE blocks too (default: kept in float)")
    add_batch_size_arg(p, default=32, help="calibration images per batch")
    add_workers_arg(p, default=0, help="decoding processes (0: in this process)")
    p.add_argument("--source", default="auto", help=f"the library that wrote the checkpoint: {sources}")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    commands["quantize"] = cmd_quantize
