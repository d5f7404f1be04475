"""`senet quantize`: static post-training INT8 quantization of a trained network as an ONNX file.

The network is exported as `senet export` writes it (SE in onnxruntime's blocked-layout form, the deploy
config in the metadata), then quantized with onnxruntime's tools: QDQ format, int8 weights per output
channel, uint8 activations whose ranges are calibrated (min/max) on `calibration_images` images of the
user's data (its training split where it has one), preprocessed exactly as in evaluation.

The SE blocks' squeeze and excitation stay in float by default (`quantize_se=False`): the small FCs and the
saturating gate are where a uniform 8-bit grid loses most (the reason NNCF ignores the SE pattern and
torchvision's all-int8 MobileNetV3 loses about a point of top-1). Their nodes are found by structure
(`senet.interop.onnx_form.se_nodes`) and excluded from quantization. The scale x * s is quantized with its
map: excluding it too leaves the unit's last convolution without an int8 consumer, so onnxruntime runs
that convolution in float (measured: INT8 SE-ResNet-50 then only 1.09x fp32, docs/deploy.md).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from senet.data import AugmentedDataset, EvalTransform, Normalize, make_loader
from senet.data.spec import open_data, open_eval_data, parse_data_spec
from senet.errors import ConfigError
from senet.interop.export import export_model, metadata_props
from senet.interop.onnx_form import se_nodes
from senet.interop.runtimes import read_config, require
from senet.weights.checkpoint import atomic_write


@dataclass
class QuantizeResult:
    """What `quantize` wrote."""

    path: Path
    bytes: int
    fp32_bytes: int
    calibration_images: int
    calibration_data: str
    se_nodes: int
    se_quantized: bool
    quantized_nodes: int

    def summary(self) -> str:
        se = (f"{self.se_nodes} SE nodes (squeeze, excitation) quantized too" if self.se_quantized
              else f"{self.se_nodes} SE nodes (squeeze, excitation) kept in float")
        return (f"wrote {self.path} (int8 QDQ, {self.bytes / 2**20:.1f} MB, fp32 {self.fp32_bytes / 2**20:.1f} MB); "
                f"calibrated on {self.calibration_images} images of {self.calibration_data}; "
                f"{self.quantized_nodes} operators quantized, {se}")


def calibration_batches(model: torch.nn.Module, data: str, count: int, *, batch_size: int = 32, workers: int = 0,
                        seed: int = 0) -> tuple[list[np.ndarray], str]:
    """`count` images of `data` (its training split where it has one; chosen at random with `seed`),
    preprocessed as in evaluation with the model's `pretrained_cfg`: float32 batches, and what they came from."""
    cfg = model.pretrained_cfg
    spec = parse_data_spec(data)
    size = int(cfg["input_size"][-1])
    if spec.kind == "folder" and spec.path is not None and not (spec.path / "train").is_dir():
        images, _ = open_eval_data(spec, default_size=size)  # a bare class folder: the images it has
        where = data
    else:
        images = open_data(spec, default_size=size).train
        where = f"{data} (training split)"
    if count < 1:
        raise ConfigError(f"--calibration-images must be >= 1, got {count}")
    chosen = np.random.default_rng(seed).permutation(len(images))[:count]
    transform = EvalTransform(size, float(cfg["crop_pct"]), mode=images.pil_mode, interpolation=cfg["interpolation"])
    loader = make_loader(AugmentedDataset(images, transform), [(int(i), 0) for i in sorted(chosen)], batch_size=batch_size,
                         workers=workers)
    normalize = Normalize(cfg["mean"], cfg["std"], torch.device("cpu"))
    batches = [normalize(batch.images).numpy().astype(np.float32) for batch in loader if len(batch.labels)]
    if not batches:
        raise ConfigError(f"{data} has no readable images to calibrate on")
    return batches, where


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over prepared batches."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self.name = name
        self.items: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.items, None)
        return None if batch is None else {self.name: batch}


def quantize_model(
    model: torch.nn.Module,
    data: str,
    output: str | Path,
    *,
    calibration_images: int = 256,
    quantize_se: bool = False,
    force: bool = False,
    batch_size: int = 32,
    workers: int = 0,
    config: dict[str, Any] | None = None,
) -> QuantizeResult:
    """Quantize `model` (a network with `pretrained_cfg`, e.g. from `senet.load_model`) to an INT8 ONNX file."""
    require("onnx", "onnxscript", "onnxruntime")
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    onnxruntime.set_default_logger_severity(3)  # the calibration sessions' notes about unused initializers

    output = Path(output).expanduser()
    if output.exists() and not force:
        raise ConfigError(f"{output} already exists; choose another --output or pass --force to replace it")
    if not output.parent.is_dir():
        raise ConfigError(f"folder {output.parent} does not exist; create it first")
    if not hasattr(model, "pretrained_cfg"):
        raise ConfigError("quantize needs a trained model with its preprocessing (load it with senet.load_model)")
    batches, where = calibration_batches(model, data, calibration_images, batch_size=batch_size, workers=workers)
    with tempfile.TemporaryDirectory(prefix="senet-quantize-") as folder:
        fp32 = Path(folder) / "fp32.onnx"
        export_model(model, fp32, config=config)
        graph = onnx.load(str(fp32))
        excluded = se_nodes(graph, scale=False)
        props = read_config(fp32)
        reader = _Reader(graph.graph.input[0].name, batches)
        int8 = Path(folder) / "int8.onnx"
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process: the export already folded BN and constants
        try:
            quantize_static(
                str(fp32), str(int8), reader,
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=[] if quantize_se else excluded,
            )
        except Exception as error:  # noqa: BLE001  (the quantizer raises many types)
            raise ConfigError(f"quantization failed: {str(error).splitlines()[0][:200]}") from None
        finally:
            root.setLevel(level)
        quantized = onnx.load(str(int8))
        props.pop("batch", None)
        props["quantization"] = {
            "format": "QDQ", "weights": "int8 per channel", "activations": "uint8 min/max",
            "calibration_images": int(sum(len(b) for b in batches)), "calibration_data": where, "se_in_float": not quantize_se,
        }
        del quantized.metadata_props[:]
        onnx.helper.set_model_props(quantized, metadata_props(props))
        atomic_write(output, lambda temp: onnx.save_model(quantized, str(temp)))
        fp32_bytes = fp32.stat().st_size
    producers = {out: node.op_type for node in quantized.graph.node for out in node.output}
    count = sum(
        1 for node in quantized.graph.node
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and node.input and producers.get(node.input[0]) == "DequantizeLinear"
    )
    return QuantizeResult(output, output.stat().st_size, fp32_bytes, int(sum(len(b) for b in batches)), where,
                          len(excluded), quantize_se, count)
