"""`senet bench --runtime onnxruntime,openvino`: a model (and its plain twin) exported to ONNX and timed in
eager PyTorch and in each runtime on the same input, one step of each per round, the order reversed every
other round (as `senet bench` does)."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from senet.bench import BenchConfig
from senet.bench import environment as bench_environment
from senet.errors import ConfigError, check_choice
from senet.interop.export import example_input, export_model
from senet.interop.runtimes import RUNTIMES, optimized_operators, require, runtime_function, version
from senet.models import create_model


@dataclass
class RuntimeBenchResult:
    """Per-round step times (seconds) of each (network, runtime), timed alternately in one process."""

    model: str
    baseline: str | None
    runtimes: tuple[str, ...]
    batch: int
    input_shape: tuple[int, ...]
    threads: int
    times: dict[str, list[float]]
    max_abs_diff: dict[str, float]
    reorders: dict[str, tuple[int, int]]
    environment: dict[str, Any]

    def ratio(self, numerator: str, denominator: str) -> tuple[float, float, float]:
        """(median, min, max) over rounds of the per-round time ratio numerator / denominator."""
        ratios = [a / b for a, b in zip(self.times[numerator], self.times[denominator])]
        return statistics.median(ratios), min(ratios), max(ratios)

    def ratios(self) -> dict[str, tuple[float, float, float]]:
        names = [self.model] + ([self.baseline] if self.baseline else [])
        out = {f"{n} {r}/eager": self.ratio(f"{n} {r}", f"{n} eager") for n in names for r in self.runtimes}
        if self.baseline:
            for runtime in ("eager", *self.runtimes):
                out[f"{self.model}/{self.baseline} {runtime}"] = self.ratio(f"{self.model} {runtime}", f"{self.baseline} {runtime}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "baseline": self.baseline,
            "runtime": ",".join(self.runtimes),
            "batch": self.batch,
            "input_shape": list(self.input_shape),
            "threads": self.threads,
            "median_ms": {k: round(1e3 * statistics.median(v), 3) for k, v in self.times.items()},
            "min_ms": {k: round(1e3 * min(v), 3) for k, v in self.times.items()},
            "ratios": {k: {"median": round(m, 4), "min": round(lo, 4), "max": round(hi, 4)} for k, (m, lo, hi) in self.ratios().items()},
            "max_abs_diff": self.max_abs_diff,
            "onnxruntime_reorders": {k: {"ReorderInput": i, "ReorderOutput": o} for k, (i, o) in self.reorders.items()},
            "times_ms": {k: [round(1e3 * t, 3) for t in v] for k, v in self.times.items()},
            "environment": self.environment,
        }

    def format(self) -> str:
        versions = ", ".join(f"{r} {self.environment.get(r, '')}" for r in self.runtimes)
        lines = [
            f"infer, batch {self.batch}, input {'x'.join(map(str, self.input_shape))}, cpu, fp32, {self.threads} threads, "
            f"{len(next(iter(self.times.values())))} rounds; {versions}",
            f"  {'':36s} {'median ms':>10s} {'min ms':>9s} {'img/s':>8s}",
        ]
        for name, times in self.times.items():
            median = statistics.median(times)
            lines.append(f"  {name:36s} {1e3 * median:10.1f} {1e3 * min(times):9.1f} {self.batch / median:8.2f}")
        for name, (median, low, high) in self.ratios().items():
            lines.append(f"  time ratio {name}: {median:.3f} (per-round range {low:.3f}-{high:.3f})")
        for name, diff in self.max_abs_diff.items():
            lines.append(f"  {name}: exported vs eager max abs difference {diff:.3g}")
        for name, (inputs, outputs) in self.reorders.items():
            lines.append(f"  {name}: onnxruntime's optimised graph has {inputs} ReorderInput and {outputs} ReorderOutput nodes")
        return "\n".join(lines)


def runtime_bench(
    model: str,
    baseline: str | None = None,
    *,
    runtimes: tuple[str, ...] = ("onnxruntime",),
    batch: int = 8,
    input_size: int | None = None,
    threads: int | None = None,
    repeats: int = 10,
    warmup: int = 2,
    model_kwargs: dict[str, Any] | None = None,
    baseline_kwargs: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RuntimeBenchResult:
    """Export `model` (and `baseline`) to ONNX, then time eager PyTorch and each of `runtimes` on the same
    input, one step of each per round, the order reversed every other round (as `senet bench` does)."""
    runtimes = tuple(dict.fromkeys(runtimes))
    for runtime in runtimes:
        check_choice("runtime", runtime, RUNTIMES)
    require("onnx", "onnxscript", "onnxruntime", *(r for r in runtimes if r != "onnxruntime"))
    if repeats < 1 or warmup < 0 or batch < 1:
        raise ConfigError("repeats and batch must be >= 1 and warmup >= 0")
    say = progress or (lambda message: None)
    previous_threads = torch.get_num_threads()
    threads = threads or previous_threads
    torch.set_num_threads(threads)
    steps: dict[str, Callable[[], object]] = {}
    diffs: dict[str, float] = {}
    reorders: dict[str, tuple[int, int]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="senet-bench-") as folder:
            for name, kwargs in ((model, model_kwargs), (baseline, baseline_kwargs)):
                if name is None:
                    continue
                torch.manual_seed(0)
                network = create_model(name, **(kwargs or {})).eval()
                say(f"exporting {name} to ONNX")
                result = export_model(network, Path(folder) / f"{name}.onnx", input_size=input_size, static_batch=True, batch=batch)
                x = example_input(network, batch, input_size)
                diffs[name] = result.max_abs_diff
                ops = optimized_operators(result.path)
                reorders[name] = (ops["ReorderInput"], ops["ReorderOutput"])
                steps[f"{name} eager"] = _eager_step(network, x)
                for runtime in runtimes:
                    run = runtime_function(result.path, runtime, threads=threads)
                    steps[f"{name} {runtime}"] = lambda run=run, array=x.numpy(): run(array)
                shape = tuple(x.shape[1:])
            for name, step in steps.items():
                say(f"warming up {name}")
                for _ in range(max(1, warmup)):
                    step()
            times: dict[str, list[float]] = {name: [] for name in steps}
            order = list(steps)
            for round_index in range(repeats):
                for name in order if round_index % 2 == 0 else reversed(order):
                    start = time.perf_counter()
                    steps[name]()
                    times[name].append(time.perf_counter() - start)
                say(f"round {round_index + 1}/{repeats}: " + ", ".join(f"{1e3 * t[-1]:.1f} ms" for t in times.values()))
        env = bench_environment(BenchConfig(model=model, threads=threads)) | {r: version(r) for r in runtimes}
    finally:
        torch.set_num_threads(previous_threads)
    return RuntimeBenchResult(model, baseline, runtimes, batch, shape, threads, times, diffs, reorders, env)


def _eager_step(network: nn.Module, x: Tensor) -> Callable[[], object]:
    def step() -> object:
        with torch.inference_mode():
            return network(x)

    return step
