"""Exported ONNX files in the CPU inference runtimes: onnxruntime (the `export` extra) and OpenVINO (the
`openvino` extra).

- `runtime_function`: a file as a function of a float32 batch, in either runtime.
- `ExportedClassifier`: a file as a classifier module that carries the file's own preprocessing and class
  names (its deploy config, `senet.interop.export.deploy_config`), so that `senet predict` and `senet eval`
  take an exported (or `senet quantize`d) file as they take a checkpoint.
- `runtime_bench`: `senet bench --runtime ...`: a model and its plain twin exported and timed in eager
  PyTorch and in each runtime, one step of each per round.
- `optimized_operators`: the operators of onnxruntime's optimised graph (where the SE block's layout
  conversions, ReorderInput / ReorderOutput, show).
"""

from __future__ import annotations

import collections
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from senet.errors import ConfigError, check_choice
from senet.weights.record import CheckpointRecord

RUNTIMES = ("onnxruntime", "openvino")  # what runs an exported file (besides eager PyTorch, "torch")
EXTRAS = {"onnx": "export", "onnxscript": "export", "onnxruntime": "export", "openvino": "openvino"}


def require(*modules: str) -> None:
    """Import `modules` or raise one line saying which install brings them."""
    missing = []
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        extras = ",".join(dict.fromkeys(EXTRAS.get(name, "export") for name in missing))
        raise ConfigError(
            f"this needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; "
            f"install {'it' if len(missing) == 1 else 'them'} with: pip install 'senet[{extras}]'"
        )


def onnxruntime_session(path: str | Path, *, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of `path` with all graph optimisations (and `threads` intra-op threads)."""
    require("onnxruntime")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001  (onnxruntime raises its own exception types)
        raise ConfigError(f"onnxruntime cannot load {path}: {first_line(error)}; is it an ONNX file?") from None


def runtime_function(path: str | Path, runtime: str = "onnxruntime", *, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The ONNX file `path` as a function of one float32 batch (its first output), in `runtime`."""
    check_choice("runtime", runtime, RUNTIMES)
    if runtime == "onnxruntime":
        session = onnxruntime_session(path, threads=threads)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    require("openvino")
    import openvino

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"OpenVINO cannot load {path}: {first_line(error)}; is it an ONNX file?") from None
    request = compiled.create_infer_request()
    output = compiled.output(0)
    return lambda x: request.infer({0: x})[output]


def read_config(path: str | Path) -> dict[str, Any]:
    """The deploy config `senet export` wrote into an ONNX file's metadata (empty for other files)."""
    require("onnx")
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001  (protobuf's decode errors)
        raise ConfigError(f"cannot read {path} as ONNX: {first_line(error)}") from None
    config: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            config[prop.key] = json.loads(prop.value)
        except ValueError:
            config[prop.key] = prop.value
    if "batch" not in config:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        config["batch"] = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
        if "input_size" not in config and len(dims) > 1 and all(d.HasField("dim_value") for d in dims[1:]):
            config["input_size"] = [d.dim_value for d in dims[1:]]
    return config


class ExportedClassifier(nn.Module):
    """An exported ONNX classifier run in onnxruntime or OpenVINO, as a module: logits of a float batch.

    `pretrained_cfg` holds the file's preprocessing and class names (its metadata; a file without them
    gets ImageNet's mean/std and class indices), `record` what `senet eval` needs of a checkpoint.
    A file exported with a static batch is run in batches of that size (the last one padded)."""

    def __init__(self, path: str | Path, runtime: str = "onnxruntime", *, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ConfigError(f"{self.path} does not exist; give an ONNX file written by senet export or senet quantize")
        self.runtime = runtime
        config = read_config(self.path)
        self.run = runtime_function(self.path, runtime, threads=threads)
        shape = config.get("input_size")
        if not shape:
            raise ConfigError(f"{self.path} has no fixed input size; export it with senet export")
        self.static_batch = config.get("batch")
        self.default_input_size = tuple(int(v) for v in shape)
        self.num_classes = int(config.get("num_classes") or 0)
        channels = self.default_input_size[0]
        mean = config.get("mean") or [0.485, 0.456, 0.406][:channels]
        std = config.get("std") or [0.229, 0.224, 0.225][:channels]
        self.pretrained_cfg = {
            "model": config.get("model") or self.path.name,
            "kwargs": config.get("model_kwargs") or {},
            "mean": mean,
            "std": std,
            "input_size": list(self.default_input_size),
            "crop_pct": float(config.get("crop_pct") or 0.875),
            "interpolation": config.get("interpolation") or "bilinear",
            "label_names": config.get("class_names"),
            "num_classes": self.num_classes,
            "file": str(self.path),
        }
        self.record = CheckpointRecord(
            model=self.pretrained_cfg["model"],
            kwargs=self.pretrained_cfg["kwargs"],
            classes=tuple(self.pretrained_cfg["label_names"]) if self.pretrained_cfg["label_names"] else None,
            channels=channels,
            mean=tuple(mean),
            std=tuple(std),
            input_size=self.default_input_size[-1],
            eval_crop_fraction=self.pretrained_cfg["crop_pct"],
            interpolation=self.pretrained_cfg["interpolation"],
            data=config.get("data"),
            source="onnx",
        )

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.default_input_size:
            raise ConfigError(f"{self.path.name} takes inputs (N, {', '.join(map(str, self.default_input_size))}), got {tuple(x.shape)}")
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        step = self.static_batch
        if not step or step == len(array):
            return torch.from_numpy(np.asarray(self.run(array)).copy())
        outs = []
        for start in range(0, len(array), step):
            chunk = array[start : start + step]
            padded = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), np.float32)]) if len(chunk) < step else chunk
            outs.append(np.asarray(self.run(padded))[: len(chunk)])
        return torch.from_numpy(np.concatenate(outs))


def open_exported(path: str | Path, *, runtime: str = "onnxruntime") -> tuple[ExportedClassifier, CheckpointRecord, Path]:
    """(classifier, checkpoint record, file) of an exported ONNX file, as `load_for_evaluation` opens a checkpoint."""
    model = ExportedClassifier(path, runtime)
    return model, model.record, model.path


def is_exported(path: str | Path) -> bool:
    """True for a file `ExportedClassifier` reads (an .onnx file)."""
    return Path(path).suffix.lower() == ".onnx"


def optimized_operators(path: str | Path, *, level: str = "all") -> collections.Counter[str]:
    """How many of each operator onnxruntime's optimised graph of `path` holds (NCHWc convolutions with a
    fused activation as e.g. `Conv[Relu]`; the layout conversions as ReorderInput / ReorderOutput)."""
    require("onnx", "onnxruntime")
    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="senet-ort-") as folder:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 3
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    counts: collections.Counter[str] = collections.Counter()
    for node in graph.node:
        activation = next((a.s.decode() for a in node.attribute if a.name == "activation"), None)
        counts[node.op_type + (f"[{activation}]" if activation else "")] += 1
    return counts


# ---------------------------------------------------------------------------------------------------
# senet bench --runtime onnxruntime,openvino


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
    from senet.bench import BenchConfig
    from senet.bench import environment as bench_environment
    from senet.interop.export import example_input, export_model
    from senet.models import create_model

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


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]


def version(module: str) -> str:
    try:
        return str(getattr(__import__(module), "__version__", ""))
    except ImportError:
        return ""

