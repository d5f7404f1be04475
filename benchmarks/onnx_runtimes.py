"""SE/plain inside onnxruntime and OpenVINO: the exporter's SE graph ("plain form") against senet's runtime
form (`senet.interop.onnx_form`), and optionally other ONNX files (e.g. timm's), all timed in one process.

    python benchmarks/onnx_runtimes.py --pair se_resnet50:resnet50 --layout torchvision \
        --extra timm_se=/tmp/timm_seresnet50.onnx --extra timm_plain=/tmp/timm_resnet50.onnx \
        --runtimes onnxruntime,openvino --rounds 20

Every file is run on the same random batch; one run of each (file, runtime) per round, the order reversed
every other round. Prints per-file median / min ms and, for each SE file against its plain twin in the same
runtime, the median of the per-round ratios with their range, and the ratio of the minimum times (the least
disturbed runs on a shared machine); and the ReorderInput / ReorderOutput counts of onnxruntime's optimised
graph of each file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from senet.interop.export import export_model
from senet.interop.runtimes import optimized_operators, runtime_function
from senet.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", action="append", required=True, help="SE:PLAIN model names, e.g. se_resnet50:resnet50")
    parser.add_argument("--layout", help="layout keyword for ResNets (torchvision)")
    parser.add_argument("--extra", action="append", default=[], help="NAME=PATH of another ONNX file (same input)")
    parser.add_argument("--ratio", action="append", default=[], help="NUM/DEN of extra files to compare, e.g. timm_se/timm_plain")
    parser.add_argument("--runtimes", default="onnxruntime", help="comma-separated: onnxruntime, openvino")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--min-step", type=float, default=0.2, help="seconds: a timed step repeats a fast model's run to last about this")
    parser.add_argument("--eager", action="store_true", help="time senet's models in eager PyTorch too (runtime 'eager')")
    parser.add_argument("--cpu-time", action="store_true", help="time the process's CPU seconds rather than the wall "
                        "clock (with --threads 1: the work itself, whatever else the shared machine runs)")
    parser.add_argument("--json", help="write every time here")
    args = parser.parse_args()
    runtimes = args.runtimes.split(",") + (["eager"] if args.eager else [])
    torch.set_num_threads(args.threads)
    files: dict[str, Path] = {}
    ratios: list[tuple[str, str]] = []
    shapes: dict[str, tuple[int, ...]] = {}
    models: dict[str, torch.nn.Module] = {}
    folder = Path(tempfile.mkdtemp(prefix="senet-onnx-runtimes-"))
    for pair in args.pair:
        se, plain = pair.split(":")
        for name in (se, plain):
            kwargs = {"layout": args.layout} if args.layout and "resnet" in name else {}
            torch.manual_seed(0)
            model = create_model(name, **kwargs).eval()
            forms = ("plain form", "runtime form") if name == se else ("runtime form",)
            for form in forms:
                key = f"{name} ({form})" if name == se else name
                path = folder / f"{name}-{form.split()[0]}.onnx"
                result = export_model(model, path, static_batch=True, batch=args.batch, plain_form=form == "plain form")
                files[key] = path
                shapes[key] = result.input_shape
                models[key] = model
                print(f"exported {key}: max abs difference {result.max_abs_diff:.3g}", flush=True)
        ratios += [(f"{se} (plain form)", plain), (f"{se} (runtime form)", plain)]
    for item in args.extra:
        name, path = item.split("=", 1)
        files[name] = Path(path)
    for item in args.ratio:
        ratios.append(tuple(item.split("/", 1)))  # type: ignore[arg-type]
    for name, path in files.items():
        ops = optimized_operators(path)
        print(f"{name}: onnxruntime optimised graph ReorderInput {ops['ReorderInput']}, ReorderOutput {ops['ReorderOutput']}; "
              + ", ".join(f"{op} {n}" for op, n in sorted(ops.items())), flush=True)
    rng = np.random.default_rng(0)
    steps = {}
    for name, path in files.items():
        shape = shapes.get(name) or (args.batch, 3, 224, 224)
        x = rng.standard_normal(shape, dtype=np.float32)
        for runtime in runtimes:
            if runtime == "eager":
                if name not in models:
                    continue
                run = lambda x, model=models[name]: _eager(model, x)  # noqa: E731
            else:
                run = runtime_function(path, runtime, threads=args.threads)
            run(x)
            start = time.perf_counter()
            run(x)
            inner = max(1, round(args.min_step / (time.perf_counter() - start)))  # small models: several runs a step
            steps[f"{name} | {runtime}"] = (lambda run=run, x=x, inner=inner: [run(x) for _ in range(inner)], inner)
    clock = time.process_time if args.cpu_time else time.perf_counter
    times: dict[str, list[float]] = {key: [] for key in steps}
    order = list(steps)
    for index in range(args.rounds):
        for key in order if index % 2 == 0 else order[::-1]:
            step, inner = steps[key]
            start = clock()
            step()
            times[key].append((clock() - start) / inner)
        print(f"round {index + 1}/{args.rounds}", flush=True)
    print(f"\nbatch {args.batch}, {args.threads} threads, {args.rounds} rounds, {'CPU' if args.cpu_time else 'wall-clock'} ms per run "
          "(a step of a fast model repeats its run)")
    print(f"| file | runtime | median ms | min ms |\n|---|---|---|---|")
    for key, values in times.items():
        name, runtime = key.split(" | ")
        print(f"| {name} | {runtime} | {1e3 * statistics.median(values):.1f} | {1e3 * min(values):.1f} |")
    print("\n| ratio | runtime | median of per-round ratios (range) | ratio of min times |\n|---|---|---|---|")
    for num, den in ratios:
        for runtime in runtimes:
            if f"{num} | {runtime}" not in times:
                continue
            a, b = times[f"{num} | {runtime}"], times[f"{den} | {runtime}"]
            per_round = [x / y for x, y in zip(a, b)]
            print(f"| {num} / {den} | {runtime} | {statistics.median(per_round):.3f} ({min(per_round):.3f}-{max(per_round):.3f}) | "
                  f"{min(a) / min(b):.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"times_s": times, "files": {k: str(v) for k, v in files.items()}}, indent=1))


def _eager(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.from_numpy(x))


if __name__ == "__main__":
    main()
