"""`senet export`: a network as ONNX, TorchScript or a torch.export program, each checked against eager.

- ONNX: `torch.onnx.export` (the torch.export-based exporter, which needs onnxscript), batch dimension
  dynamic unless `static_batch`. The SE block exports as its plain formula, x * sigmoid(W2 relu(W1 mean(x)))
  (Sec. 3): the fast path of `senet.layers.merge` steps aside whenever an exporter traces, so the graph
  holds standard ONNX operators only (checked), and onnxruntime runs it; the largest difference from
  eager is reported.
- TorchScript: `torch.jit.trace` (scripting is not supported: docs/model-api.md).
- exported program (.pt2): `torch.export.export` with a dynamic batch, ATen operators only (checked).

The ONNX file holds SE in onnxruntime's blocked-layout form (`senet.interop.onnx_form`) and, like the
TorchScript and .pt2 files, the deploy config (`deploy_config`: classes, preprocessing, model name), which
`senet predict`, `senet eval` and `senet quantize` read (`senet.interop.runtimes`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from senet.errors import ConfigError, SenetError, check_choice
from senet.options import IMAGENET_MEAN, IMAGENET_STD
from senet.weights.record import DEFAULT_CROP_FRACTION
from senet.interop.onnx_form import runtime_form
from senet.interop.runtimes import first_line, require, runtime_function, version
from senet.weights.checkpoint import atomic_write

from senet.options import EXPORT_FORMATS as FORMATS
from senet.options import EXPORT_SUFFIXES as SUFFIXES
ONNX_DOMAINS = ("", "ai.onnx")  # the standard operator set; anything else is a custom op
CONFIG_FILE = "senet.json"  # the TorchScript / .pt2 extra file with the deploy config (`deploy_config`)
ONNX_SIZE_LIMIT = 2**31 - 2**26  # protobuf's 2 GB, with room for the graph: larger weights go to a .data file


class ExportError(SenetError):
    """An export that cannot be written or that does not reproduce the eager model."""


@dataclass
class ExportResult:
    """What was written and how it compares with the eager model on the same random input."""

    format: str
    path: Path
    bytes: int
    max_abs_diff: float
    checked_with: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    operators: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    agreement: Agreement | None = None  # the check's figures (the eager model's own float32 error among them)

    def summary(self) -> str:
        batch = "dynamic batch" if self.dynamic_batch else f"static batch {self.input_shape[0]}"
        return (
            f"wrote {self.path} ({self.format}, {self.bytes / 2**20:.1f} MB, input {list(self.input_shape)}, {batch}); "
            f"{self.checked_with} vs eager: max abs difference {self.max_abs_diff:.3g}"
            + (f" (off by {self.agreement.error:.3g} against float64, root-mean-square; eager float32 is off by "
               f"{self.agreement.rounding:.3g})" if self.agreement else "")
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress logs and deprecation warnings off (the result is checked and printed instead)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def example_input(model: nn.Module, batch: int, input_size: int | None) -> Tensor:
    """A random batch of the model's input shape (the side set to `input_size` if given)."""
    shape = tuple(getattr(model, "pretrained_cfg", {}).get("input_size") or model.default_input_size)
    if input_size is not None:
        if input_size < 1:
            raise ConfigError(f"--input-size must be >= 1, got {input_size}")
        shape = (shape[0],) + (input_size,) * (len(shape) - 1)
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, *shape), generator=generator)


def deploy_config(model: nn.Module, name: str | None = None, kwargs: dict[str, Any] | None = None,
                  input_size: int | None = None) -> dict[str, Any]:
    """What a deployed file needs to preprocess and label images without the checkpoint: the model's
    `pretrained_cfg` (`senet.load_model`'s models have one), else ImageNet's preprocessing with the
    model's input size; `name` and `kwargs` (the create_model keywords) where the model has no cfg."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    shape = list(cfg.get("input_size") or model.default_input_size)
    if input_size is not None:
        shape = [shape[0]] + [input_size] * (len(shape) - 1)
    channels = shape[0]
    mean = cfg.get("mean") or (IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,) * channels)
    std = cfg.get("std") or (IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,) * channels)
    return {
        "model": cfg.get("model") or name,
        "model_kwargs": cfg.get("kwargs") or dict(kwargs or {}),
        "class_names": cfg.get("label_names"),
        "num_classes": int(getattr(model, "num_classes", 0) or 0),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "input_size": [int(v) for v in shape],
        "crop_pct": float(cfg.get("crop_pct") or DEFAULT_CROP_FRACTION),
        "interpolation": cfg.get("interpolation") or "bilinear",
    }


def export_model(
    model: nn.Module,
    output: str | Path,
    *,
    format: str = "onnx",
    opset: int | None = None,
    input_size: int | None = None,
    static_batch: bool = False,
    batch: int = 2,
    force: bool = False,
    config: dict[str, Any] | None = None,
    plain_form: bool = False,
) -> ExportResult:
    """Export `model` (put in eval mode) to `output` atomically and check the result against eager.

    `config` (default: `deploy_config(model)`) is written into the file (ONNX metadata_props, the
    TorchScript / .pt2 extra file `senet.json`) so that the file preprocesses and labels images on its own.
    `plain_form` keeps the exporter's SE graph (ONNX only; default: `onnx_form.runtime_form`)."""
    check_choice("export format", format, FORMATS)
    output = Path(output).expanduser()
    if output.exists() and not force:
        raise ConfigError(f"{output} already exists; choose another --output or pass --force to replace it")
    if not output.parent.is_dir():
        raise ConfigError(f"folder {output.parent} does not exist; create it first")
    if opset is not None and format != "onnx":
        raise ConfigError("--opset applies to ONNX only")
    if batch < 1:
        raise ConfigError(f"the example batch must be >= 1, got {batch}")
    model = model.eval()
    example = example_input(model, batch, input_size)
    config = {**deploy_config(model, input_size=input_size), **(config or {})}
    config["input_size"] = [int(v) for v in example.shape[1:]]
    config["senet_version"] = version("senet")
    exporters: dict[str, Callable[..., ExportResult]] = {
        "onnx": _export_onnx,
        "torchscript": _export_torchscript,
        "exported-program": _export_program,
    }
    with torch.no_grad():
        return exporters[format](model, output, example, dynamic=not static_batch, opset=opset, config=config,
                                 plain_form=plain_form)


def _check_inputs(example: Tensor, dynamic: bool) -> list[Tensor]:
    """The example batch, and for a dynamic batch also one of another size (the axis must really be free)."""
    if not dynamic:
        return [example]
    generator = torch.Generator().manual_seed(1)
    return [example, torch.randn((example.shape[0] + 1, *example.shape[1:]), generator=generator)]


# The check of an exported program against eager. Two float32 programs of one network differ by rounding,
# and by how much depends on the network: a trained one by ~1e-6 of its outputs, while a freshly initialised
# deep one in eval mode amplifies every rounding step (SE-ResNet-110 at 32 pixels: outputs ~7e3 that float32
# eager gets wrong by ~10, root-mean-square, against float64). So the bound is measured, not fixed: how far
# float32 programs of this network land from its float64 result (eager as it is, in channels_last, one image
# at a time: in a chaotic network each lands differently), times ROUNDING_MULTIPLE, plus a floor for the tiny
# errors of well-conditioned networks; the exported program, also compared with float64, must stay within it.
# Root-mean-squares over all outputs: the largest single difference varies too much from run to run to bound.
# A wrong operator or a dropped layer moves the outputs by far more (tests/interop/test_export_check.py).
ROUNDING_MULTIPLE = 16.0  # (measured: onnxruntime up to ~4.5x; a wrong gate or a dropped block: 200x and more)
FLOOR_ABS, FLOOR_REL = 1e-6, 1e-4  # absolute, and relative to the outputs' root-mean-square


@dataclass
class Agreement:
    """How an exported program's outputs compare with eager float32 and with float64."""

    max_abs_diff: float  # exported vs eager float32, largest element
    error: float  # exported vs float64, root-mean-square
    rounding: float  # the float32 programs of eager vs float64, root-mean-square (the largest of them)
    rms_output: float

    @property
    def allowed(self) -> float:
        return ROUNDING_MULTIPLE * self.rounding + FLOOR_ABS + FLOOR_REL * self.rms_output


def _rms(t: Tensor) -> float:
    return float(t.double().square().mean().sqrt())


def _float32_programs(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Eager float32 outputs for `x` as computed in a few orders: as is, one image at a time, channels_last."""
    outputs = [model(x)]
    if len(x) > 1:
        outputs.append(torch.cat([model(x[i : i + 1]) for i in range(len(x))]))
    if x.dim() in (4, 5):
        layout = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        outputs.append(copy.deepcopy(model).to(memory_format=layout)(x.contiguous(memory_format=layout)))
    return outputs


def agreement(model: nn.Module, run: Callable[[Tensor], Tensor | np.ndarray], inputs: list[Tensor]) -> Agreement:
    """The outputs of `run` (an exported program) on each of `inputs` against eager `model` in float32 and
    against a float64 copy of it, and how far eager float32 itself lands from float64."""
    reference = copy.deepcopy(model).double()
    eager, got, exact, programs = [], [], [], []
    for x in inputs:
        output = run(x)
        output = output if isinstance(output, Tensor) else torch.as_tensor(np.asarray(output))
        outputs = _float32_programs(model, x)
        if tuple(output.shape) != tuple(outputs[0].shape):
            raise ExportError(f"the exported model gives shape {tuple(output.shape)} for input {tuple(x.shape)}, eager {tuple(outputs[0].shape)}")
        truth = reference(x.double()).flatten()
        eager.append(outputs[0].double().flatten())
        got.append(output.double().flatten())
        exact.append(truth)
        programs.append(torch.stack([o.double().flatten() - truth for o in outputs]))
    eager_all, got_all, exact_all, programs_all = torch.cat(eager), torch.cat(got), torch.cat(exact), torch.cat(programs, 1)
    rounding = max(_rms(errors) for errors in programs_all)
    return Agreement(float((got_all - eager_all).abs().max()), _rms(got_all - exact_all), rounding, _rms(eager_all))


def _check_close(model: nn.Module, run: Callable[[Tensor], Tensor | np.ndarray], inputs: list[Tensor], what: str) -> Agreement:
    """The agreement of `run` with eager `model` on `inputs`; ExportError unless float32 rounding explains it."""
    found = agreement(model, run, inputs)
    if not found.error <= found.allowed:
        raise ExportError(
            f"{what} is off by {found.error:.3g} (root-mean-square against float64; largest difference from eager "
            f"{found.max_abs_diff:.3g}), more than float32 rounding explains (allowed {found.allowed:.3g}: eager "
            f"float32 is off by up to {found.rounding:.3g}, the outputs are {found.rms_output:.3g}); the exported "
            "graph computes something else: please report this"
        )
    return found


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1, max=2**20)


# ---------------------------------------------------------------------------------------------------


def metadata_props(config: dict[str, Any]) -> dict[str, str]:
    """`config` as ONNX metadata_props: each key's value as JSON (strings, lists, numbers, null)."""
    return {key: json.dumps(value) for key, value in config.items()}


def read_metadata(props: dict[str, str]) -> dict[str, Any]:
    """The config `metadata_props` wrote (keys that are not JSON are kept as strings)."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _export_onnx(model: nn.Module, output: Path, example: Tensor, *, dynamic: bool, opset: int | None,
                 config: dict[str, Any], plain_form: bool = False) -> ExportResult:
    require("onnx", "onnxscript", "onnxruntime")
    import onnx

    params = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        with _quiet():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: _batch_dim()},) if dynamic else None,
                opset_version=opset,
                external_data=params > ONNX_SIZE_LIMIT,
                verbose=False,
            )
    except Exception as error:  # noqa: BLE001  (the exporter raises many types; the first line says why)
        raise ExportError(f"ONNX export failed: {first_line(error)}") from None
    proto = program.model_proto
    notes = []
    if not plain_form:
        form = runtime_form(proto)
        if form.scales:
            notes.append(f"SE in runtime form: {form.squeezes} squeezes as GlobalAveragePool, {form.scales} scales "
                         "with the gate repeated over H x W (onnxruntime keeps them in its blocked layout)")
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata_props(config))
    operators = sorted({f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in proto.graph.node})
    custom = sorted({n.domain for n in proto.graph.node if n.domain not in ONNX_DOMAINS})
    if custom:
        raise ExportError(f"the ONNX graph of {output} uses non-standard operator domains {custom}; please report this")
    large = params > ONNX_SIZE_LIMIT
    checked: list[Agreement] = []

    def write_and_check(temp: Path) -> None:  # checked before it replaces `output`: a failed check leaves it as it was
        onnx.save_model(proto, str(temp), save_as_external_data=large, location=output.name + ".data" if large else None)
        run = runtime_function(temp, "onnxruntime")
        checked.append(_check_close(model, lambda x: run(x.numpy()), _check_inputs(example, dynamic),
                                    f"onnxruntime's result for {output}"))

    atomic_write(output, write_and_check)
    found = checked[0]
    return ExportResult("onnx", output, output.stat().st_size, found.max_abs_diff, "onnxruntime " + version("onnxruntime"),
                        tuple(example.shape), dynamic, operators, notes, agreement=found)


def _export_torchscript(model: nn.Module, output: Path, example: Tensor, *, dynamic: bool, opset: int | None,
                        config: dict[str, Any], plain_form: bool = False) -> ExportResult:
    # Traced, not scripted: each unit's forward is written once, around the fused merge's custom op and the
    # Python that chooses it, which TorchScript (deprecated) cannot compile; a trace records the formula's
    # plain operations (docs/model-api.md).
    with _quiet():
        program = torch.jit.trace(model, (example,), check_trace=False)
    how = "torch.jit.trace"
    notes = ["traced: the program records this model's operations for inputs shaped like the example "
             "(any batch size; `torch.jit.script` is not supported, docs/model-api.md)"]
    extra = {CONFIG_FILE: json.dumps(config)}
    buffer = io.BytesIO()  # (saved to a file, TorchScript's writer aborts the process when the disk is full)
    torch.jit.save(program, buffer, _extra_files=extra)
    loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))  # the saved program, checked before it is written
    found = _check_close(model, loaded, _check_inputs(example, dynamic), f"the TorchScript program {output}")
    atomic_write(output, lambda temp: temp.write_bytes(buffer.getvalue()))
    return ExportResult("torchscript", output, output.stat().st_size, found.max_abs_diff, how, tuple(example.shape), dynamic,
                        notes=notes, agreement=found)


def _export_program(model: nn.Module, output: Path, example: Tensor, *, dynamic: bool, opset: int | None,
                    config: dict[str, Any], plain_form: bool = False) -> ExportResult:
    try:
        with _quiet():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: _batch_dim()},) if dynamic else None)
    except Exception as error:  # noqa: BLE001
        raise ExportError(f"torch.export failed: {first_line(error)}") from None
    operators = sorted({str(n.target) for n in program.graph.nodes if n.op == "call_function"})
    custom = [op for op in operators if not op.startswith(("aten.", "<built-in function getitem>"))]
    if custom:
        raise ExportError(f"the exported program uses non-ATen operators {custom}; please report this")
    buffer = io.BytesIO()  # (torch.export.save wants a name ending in .pt2, which the temporary file lacks)
    torch.export.save(program, buffer, extra_files={CONFIG_FILE: json.dumps(config)})
    loaded = torch.export.load(io.BytesIO(buffer.getvalue())).module()  # the saved program, checked before it is written
    found = _check_close(model, loaded, _check_inputs(example, dynamic), f"the exported program {output}")
    atomic_write(output, lambda temp: temp.write_bytes(buffer.getvalue()))
    return ExportResult("exported-program", output, output.stat().st_size, found.max_abs_diff, "torch.export.load",
                        tuple(example.shape), dynamic, operators, agreement=found)
