"""INT8 against fp32 in onnxruntime, and SE/plain in INT8: `senet quantize`'s files of a network and its plain twin
(fresh weights, calibrated on synthetic images: speed does not depend on what the weights learnt).

    python benchmarks/int8_speed.py --pair se_resnet50:resnet50 --layout torchvision --rounds 10 --threads 1 --cpu-time

Files timed, interleaved in one process: fp32 (`senet export`), INT8 with the SE blocks in float (the default),
INT8 with the SE blocks quantized (`--quantize-se`), and the plain twin in fp32 and INT8. Prints the median
(and range) of the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from senet.interop.export import deploy_config, export_model
from senet.interop.quantize import quantize_model
from senet.interop.runtimes import runtime_function
from senet.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", default="se_resnet50:resnet50")
    parser.add_argument("--layout", default="torchvision", help="ResNet layout keyword ('': none)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calibration-images", type=int, default=16)
    parser.add_argument("--cpu-time", action="store_true", help="CPU seconds of the process instead of the wall clock")
    args = parser.parse_args()
    se, plain = args.pair.split(":")
    folder = Path(tempfile.mkdtemp(prefix="senet-int8-"))
    files: dict[str, Path] = {}
    for name in (se, plain):
        torch.manual_seed(0)
        model = create_model(name, **({"layout": args.layout} if args.layout else {})).eval()
        config = deploy_config(model, name)
        model.pretrained_cfg = {**config, "label_names": None, "kwargs": config["model_kwargs"]}
        size = config["input_size"][-1]
        data = f"synthetic:size={size},train={args.calibration_images},val=8,classes={model.num_classes}"
        files[f"{name} fp32"] = folder / f"{name}.onnx"
        export_model(model, files[f"{name} fp32"], static_batch=True, batch=args.batch)
        variants = ((False, "int8"), (True, "int8 SE quantized")) if name == se else ((False, "int8"),)
        for quantize_se, label in variants:
            files[f"{name} {label}"] = folder / f"{name}-{label.replace(' ', '-')}.onnx"
            result = quantize_model(model, data, files[f"{name} {label}"], calibration_images=args.calibration_images,
                                    quantize_se=quantize_se)
            print(result.summary(), flush=True)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, size, size), dtype=np.float32)
    runs = {key: runtime_function(path, "onnxruntime", threads=args.threads) for key, path in files.items()}
    for run in runs.values():
        run(x)
    clock = time.process_time if args.cpu_time else time.perf_counter
    times: dict[str, list[float]] = {key: [] for key in runs}
    order = list(runs)
    for index in range(args.rounds):
        for key in order if index % 2 == 0 else order[::-1]:
            start = clock()
            runs[key](x)
            times[key].append(clock() - start)
        print(f"round {index + 1}/{args.rounds}", flush=True)
    print(f"\nbatch {args.batch}, {args.threads} threads, {args.rounds} rounds, {'CPU' if args.cpu_time else 'wall-clock'} ms per run")
    print("| file | median ms | min ms |\n|---|---|---|")
    for key, values in times.items():
        print(f"| {key} | {1e3 * statistics.median(values):.1f} | {1e3 * min(values):.1f} |")
    print("\n| ratio | median of per-round ratios (range) |\n|---|---|")
    for num, den in ((f"{se} fp32", f"{se} int8"), (f"{se} fp32", f"{se} int8 SE quantized"), (f"{plain} fp32", f"{plain} int8"),
                     (f"{se} int8", f"{plain} int8"), (f"{se} int8 SE quantized", f"{plain} int8"), (f"{se} fp32", f"{plain} fp32")):
        ratios = [a / b for a, b in zip(times[num], times[den])]
        print(f"| {num} / {den} | {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")


if __name__ == "__main__":
    main()
