"""Exported ONNX files in the CPU inference runtimes: onnxruntime (the `export` extra) and OpenVINO (the
`openvino` extra).

- `runtime_function`: a file as a function of a float32 batch, in either runtime.
- `ExportedClassifier`: a file as a classifier module that carries the file's own preprocessing and class
  names (its deploy config, `senet.interop.export.deploy_config`), so that `senet predict` and `senet eval`
  take an exported (or `senet quantize`d) file as they take a checkpoint.
- (`senet bench --runtime ...` exports a model and times it in each runtime: `senet.interop.runtime_bench`.)
- `optimized_operators`: the operators of onnxruntime's optimised graph (where the SE block's layout
  conversions, ReorderInput / ReorderOutput, show).
"""

from __future__ import annotations

import collections
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from senet.errors import ConfigError, check_choice
from senet.options import RUNTIMES  # what runs an exported file (besides eager PyTorch, "torch")
from senet.weights.record import CheckpointRecord

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


def optimized_operators(path: str | Path) -> collections.Counter[str]:
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


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]


def version(module: str) -> str:
    try:
        return str(getattr(__import__(module), "__version__", ""))
    except ImportError:
        return ""

