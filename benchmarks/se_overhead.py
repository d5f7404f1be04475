"""The standard table of SE's cost in time and memory (paper Sec. 4: 190 vs 209 ms per GPU training batch,
164 vs 167 ms CPU inference), written as Markdown.

Rows: SE-ResNet-50 vs ResNet-50 and SE-ResNeXt-50 vs ResNeXt-50, inference and training step, eager and
torch.compile; then SE-ResNet-50's fused SE path against the straightforward formula on the same network.
CPU always (fp32, batch 8 by default); CUDA too when a GPU is present (batch 256, bf16 autocast,
channels_last: the setting of the GPU target). Every row is one `senet bench` measurement, models timed
alternately in one process.

    python benchmarks/se_overhead.py                       # CPU (and CUDA if present) -> benchmarks/results/
    python benchmarks/se_overhead.py --devices cuda        # the GPU table only -> results/se_overhead_cuda.md
    python benchmarks/se_overhead.py --no-compile --repeats 5 --output /tmp/table.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from senet.allocator import keep_freed_memory
from senet.bench import BenchConfig, BenchResult, format_result, markdown_table, provenance_line, run_bench

PAIRS = (("se_resnet50", "resnet50"), ("se_resnext50_32x4d", "resnext50_32x4d"))
RESULTS = Path(__file__).resolve().parent / "results"


def default_output(devices: list[str], execs: list[str] | None = None) -> Path:
    """results/se_overhead_cpu.md, results/se_overhead_cuda.md, or se_overhead_cpu_cuda.md for both; with
    `_compiled` appended when only compiled rows are measured (so they do not overwrite the eager table)."""
    suffix = "_compiled" if execs is not None and set(execs) == {"compiled"} else ""
    return RESULTS / f"se_overhead_{'_'.join(devices)}{suffix}.md"


def configs(args: argparse.Namespace) -> list[BenchConfig]:
    """Every measurement of the table, in order."""
    pairs = [tuple(p.split(":")) for p in args.pairs] if args.pairs else PAIRS
    devices = resolve_devices(args)
    execs = ["eager"] if args.no_compile else args.exec
    out = []
    for device in devices:
        gpu = device == "cuda"
        base = BenchConfig(
            model=pairs[0][0],
            device=device,
            batch=args.gpu_batch if gpu else args.batch,
            input_size=args.input,
            amp=gpu,
            channels_last=gpu,
            threads=None if gpu else args.threads,
            repeats=args.repeats,
            warmup=args.warmup,
        )
        if "eager" in execs:
            for model, baseline in pairs:
                for mode in ("infer", "train"):
                    out.append(base.replace(model=model, baseline=baseline, mode=mode))
            # The fast path against the straightforward SE on the same network: the comparison,
            # eager (benchmarks/merge_block.py compares the two compiled, on a unit's tail).
            model = pairs[0][0]
            for mode in ("infer", "train"):
                out.append(base.replace(model=model, baseline=model, mode=mode, se_impl="fused", baseline_se_impl="naive"))
        if "compiled" in execs:
            for model, baseline in pairs:
                for mode in ("infer", "train"):
                    out.append(base.replace(model=model, baseline=baseline, mode=mode, compile=True))
    return out


def resolve_devices(args: argparse.Namespace) -> list[str]:
    """The devices to measure: --devices as given, else the CPU and, when present, CUDA."""
    if args.devices:
        if "cuda" in args.devices and not torch.cuda.is_available():
            raise SystemExit("se_overhead.py: --devices cuda: no CUDA device is available here; use --devices cpu")
        return list(dict.fromkeys(args.devices))
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])


def settings_line(config: BenchConfig, threads: int) -> str:
    precision = "bf16 autocast" if config.amp else "fp32"
    layout = "channels_last" if config.channels_last else "NCHW"
    side = config.input_size or 224
    return (
        f"{config.device.upper()}: batch {config.batch}, {side}x{side}, {precision}, {layout}, "
        f"{threads} threads, {config.repeats} timed rounds after {config.warmup} warm-up steps"
    )


def render(results: list[BenchResult], command: str) -> str:
    lines = ["# SE overhead: time and memory against the plain network", ""]
    gpus = [r.environment["gpu"] for r in results if "gpu" in r.environment]
    lines.append(provenance_line(results[0].environment | ({"gpu": gpus[0]} if gpus else {})))
    lines += ["", f"Command: `{command}`", ""]
    for device in dict.fromkeys(r.config.device for r in results):
        rows = [r for r in results if r.config.device == device]
        lines += [f"## {settings_line(rows[0].config, rows[0].environment['threads'])}", "", markdown_table(rows), ""]
    lines += [
        "ratio: model / baseline time per step, the median of per-round ratios (the two are timed back to "
        "back each round); ratio of minima: of the fastest steps; CPU-time ratio: of the process CPU time "
        "per step, median of per-round ratios (robust to losing cores to other processes). Peak MB: on CUDA the rise of max_memory_allocated over one step plus weights, optimizer state and batch; on CPU the peak of live tensor bytes of "
        "one training step from the profiler's allocation events plus weights, optimizer state and batch. "
        "Rows with one model name compare its fused SE path (model) with the straightforward formula "
        "(baseline): ratio < 1 means the fused path is faster.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="CPU batch (default 8)")
    parser.add_argument("--gpu-batch", type=int, default=256, help="CUDA batch (default 256)")
    parser.add_argument("--input", type=int, help="input side (default: the models' own, 224)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--no-compile", action="store_true", help="eager rows only (--exec eager)")
    parser.add_argument("--exec", nargs="+", choices=("eager", "compiled"), default=["eager", "compiled"],
                        help="execution modes measured (default both)")
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even when present")
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), help="devices to measure (default: cpu, and cuda when present)")
    parser.add_argument("--pairs", nargs="+", metavar="SE:PLAIN", help="model pairs instead of the standard two")
    parser.add_argument("--output", type=Path, help="Markdown file (default: results/se_overhead_<devices>[_compiled].md)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as senet's commands (senet.allocator; SENET_MALLOC=system opts out)
    if args.output is None:
        args.output = default_output(resolve_devices(args), ["eager"] if args.no_compile else args.exec)

    command = "python benchmarks/se_overhead.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results = []
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for config in configs(args):
        result = run_bench(config, progress=lambda message: print(f"    {message}", file=sys.stderr, flush=True))
        print(format_result(result), flush=True)
        results.append(result)
        args.output.write_text(render(results, command.strip()))  # after every row: a long run keeps its rows
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
