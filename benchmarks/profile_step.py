"""Where SE's time goes: one step of a model and of its baseline, profiled kernel by kernel.

`senet bench` says how much slower SE-ResNet-50 is than ResNet-50; this says why. Both networks run the
same step (`senet bench`'s), the profiler records every kernel (CUDA) or operator (CPU), and the table
lists the kernels whose time per step differs most between the two, grouped into classes (convolution,
batch norm, elementwise, reduction, optimizer, ...). The SE blocks' cost is the difference.

    python benchmarks/profile_step.py --device cuda --batch 256 --amp --channels-last
    python benchmarks/profile_step.py --model se_resnet50 --baseline se_resnet50 --baseline-se-impl naive
    python benchmarks/profile_step.py --device cpu --batch 8 --threads 2 --steps 1 --rounds 7
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from senet.allocator import keep_freed_memory
from senet.bench import BenchConfig, Subject, environment, provenance_line

# Kernel-name fragments (lower case) -> class, first match wins.
CLASSES = (
    ("optimizer", ("multi_tensor", "foreach", "sgd", "_amp_", "fused_adam")),
    ("SE kernels (senet)", ("_scale_shift_kernel", "_merge_backward_kernel")),
    ("batch norm", ("batch_norm", "batchnorm", "bn_fw", "bn_bw", "welford", "cudnn::bn")),
    ("convolution", ("conv", "xmma", "gemm", "cutlass", "sm90_", "sm80_", "implicit_", "wgrad", "dgrad", "cudnn", "mkldnn", "addmm", "mm")),
    ("pooling", ("pool",)),
    ("reduction", ("reduce", "sum", "mean", "norm")),
    ("copy / layout", ("copy", "nchwtonhwc", "nhwctonchw", "transpose", "cat", "fill")),
    ("elementwise", ("elementwise", "vectorized", "threshold", "sigmoid", "relu", "mul", "add", "triton", "unrolled", "sub", "div")),
)


def kernel_class(name: str) -> str:
    lower = name.lower()
    for label, fragments in CLASSES:
        if any(f in lower for f in fragments):
            return label
    return "other"


def host_ms(subject: Subject, steps: int, device: str) -> tuple[float, float]:
    """(ms the host takes to issue one step, ms the step takes to finish), medians, outside the profiler.
    Where the two are close, the step is bound by the host (Python, launches), not by the device."""
    issue, total = [], []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        subject.step()
        issued = time.perf_counter()
        if device == "cuda":
            torch.cuda.synchronize()
        issue.append(1e3 * (issued - start))
        total.append(1e3 * (time.perf_counter() - start))
    return sorted(issue)[steps // 2], sorted(total)[steps // 2]


def profile_subject(subject: Subject, steps: int, device: str) -> tuple[dict[str, float], dict[str, int], float]:
    """(microseconds per step by kernel/operator name, calls per step, wall ms per step)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            subject.step()
        if device == "cuda":
            torch.cuda.synchronize()
        wall_ms = 1e3 * (time.perf_counter() - start) / steps
    times: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    for event in prof.key_averages():
        if device == "cuda":
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            self_us = getattr(event, "self_device_time_total", None)
            if self_us is None:
                self_us = event.self_cuda_time_total
        else:
            self_us = event.self_cpu_time_total
        if self_us <= 0:
            continue
        times[event.key] += self_us / steps
        calls[event.key] += event.count // steps
    return times, calls, wall_ms


def median_of_rounds(runs: list[tuple[dict[str, float], dict[str, int], float]]) -> tuple[dict[str, float], dict[str, int], float]:
    """Per name, the median over rounds of its time per step (0 in a round without it); calls of the
    first round; the median wall time."""
    names = set().union(*(times for times, _, _ in runs))
    times = {name: statistics.median(t.get(name, 0.0) for t, _, _ in runs) for name in names}
    return times, runs[0][1], statistics.median(wall for _, _, wall in runs)


def short(name: str, width: int = 90) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="se_resnet50")
    parser.add_argument("--baseline", default="resnet50")
    parser.add_argument("--se-impl", default="fused", choices=("fused", "naive"))
    parser.add_argument("--baseline-se-impl", choices=("fused", "naive"))
    parser.add_argument("--mode", default="train", choices=("infer", "train"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--input", type=int)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile both networks")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps per round (averaged)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="profiled rounds of each network, alternating; each time is the median over rounds")
    parser.add_argument("--top", type=int, default=25, help="kernels listed")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as senet's commands (senet.allocator; SENET_MALLOC=system opts out)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("profile_step.py: --device cuda: no CUDA device is available here; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)

    config = BenchConfig(model=args.model, baseline=args.baseline, mode=args.mode, batch=args.batch,
                         input_size=args.input, device=args.device, amp=args.amp,
                         channels_last=args.channels_last, threads=args.threads, compile=args.compile)
    subjects, hosts = {}, {}
    for label, name, impl in (("model", args.model, args.se_impl),
                              ("baseline", args.baseline, args.baseline_se_impl or args.se_impl)):
        subjects[label] = Subject(name, {}, impl, config)
        for _ in range(args.warmup):
            subjects[label].step()
        hosts[label] = host_ms(subjects[label], max(args.steps, 5), args.device)
    rounds: dict[str, list] = {"model": [], "baseline": []}
    for index in range(args.rounds):  # alternating, so that load from elsewhere hits both alike
        for label in ("model", "baseline") if index % 2 == 0 else ("baseline", "model"):
            rounds[label].append(profile_subject(subjects[label], args.steps, args.device))
    results = {label: median_of_rounds(runs) for label, runs in rounds.items()}
    del subjects
    if args.device == "cuda":
        torch.cuda.empty_cache()

    (m_times, m_calls, m_wall), (b_times, b_calls, b_wall) = results["model"], results["baseline"]
    unit = "kernel" if args.device == "cuda" else "operator (self CPU time)"
    m_total, b_total = sum(m_times.values()) / 1e3, sum(b_times.values()) / 1e3
    lines = [
        f"# One {args.mode} step, {args.model} ({args.se_impl}) vs {args.baseline} "
        f"({args.baseline_se_impl or args.se_impl}): {args.device}, batch {args.batch}, "
        f"{'bf16 autocast' if args.amp else 'fp32'}, {'channels_last' if args.channels_last else 'NCHW'}, "
        f"{'compiled' if args.compile else 'eager'}, "
        f"{args.rounds} alternating rounds of {args.steps} profiled steps after {args.warmup} warm-up",
        "",
        provenance_line(environment(config)),
        "",
        f"wall ms per step (under the profiler): model {m_wall:.1f}, baseline {b_wall:.1f}, ratio {m_wall / b_wall:.3f}",
        f"without the profiler, ms to issue a step / to finish it: model {hosts['model'][0]:.1f} / "
        f"{hosts['model'][1]:.1f}, baseline {hosts['baseline'][0]:.1f} / {hosts['baseline'][1]:.1f}",
        f"summed {unit} ms per step: model {m_total:.1f}, baseline {b_total:.1f}, ratio {m_total / b_total:.3f}, "
        f"difference {m_total - b_total:+.1f}",
        f"{unit} launches per step: model {sum(m_calls.values())}, baseline {sum(b_calls.values())}",
        "",
        "## By class (ms per step)",
        "",
        "| class | model | baseline | difference |",
        "|---|---|---|---|",
    ]
    classes: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for name, us in m_times.items():
        classes[kernel_class(name)][0] += us / 1e3
    for name, us in b_times.items():
        classes[kernel_class(name)][1] += us / 1e3
    for label, (m, b) in sorted(classes.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1])):
        lines.append(f"| {label} | {m:.2f} | {b:.2f} | {m - b:+.2f} |")
    lines += ["", f"## The {args.top} {unit}s whose time differs most (ms per step; calls per step)", "",
              "| name | class | model ms | calls | baseline ms | calls | difference |", "|---|---|---|---|---|---|---|"]
    names = sorted(set(m_times) | set(b_times), key=lambda n: -abs(m_times.get(n, 0) - b_times.get(n, 0)))
    for name in names[: args.top]:
        m, b = m_times.get(name, 0.0) / 1e3, b_times.get(name, 0.0) / 1e3
        lines.append(f"| `{short(name)}` | {kernel_class(name)} | {m:.3f} | {m_calls.get(name, 0)} | {b:.3f} "
                     f"| {b_calls.get(name, 0)} | {m - b:+.3f} |")
    lines += ["", f"## The {args.top} most expensive {unit}s of the model", "",
              "| name | class | ms | calls | share |", "|---|---|---|---|---|"]
    for name in sorted(m_times, key=lambda n: -m_times[n])[: args.top]:
        lines.append(f"| `{short(name)}` | {kernel_class(name)} | {m_times[name] / 1e3:.3f} | {m_calls[name]} "
                     f"| {100 * m_times[name] / 1e3 / m_total:.1f}% |")
    report = "\n".join(lines)
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
