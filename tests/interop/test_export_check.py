"""The check of an exported program against eager cannot cry wolf: its bound is how far this network's own float32
programs land from float64, so every registered model exports with fresh weights, however badly a fresh deep
network amplifies rounding; while a real mismatch (a wrong operator, a dropped layer) is still caught."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from checkpoint_files import network
from torch import nn

from senet.cli import main
from senet.interop.export import ExportError, _check_close, _check_inputs, example_input, export_model
from senet.models import create_model, list_models


def exporting() -> bool:
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_exporting()


class ExportsAnotherGate(nn.Module):
    """The sigmoid in eager, hard-sigmoid once an exporter traces or scripts it: a wrong operator in the graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if exporting():
            return nn.functional.hardsigmoid(x)
        return torch.sigmoid(x)


class DroppedWhenExported(nn.Module):
    """A residual unit that an exporter would leave out (the identity in its place): a dropped layer."""

    def __init__(self, unit: nn.Module) -> None:
        super().__init__()
        self.unit = unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if exporting():
            return x
        return self.unit(x)


class TanhSigmoid(nn.Module):
    """The sigmoid as 0.5 tanh(x/2) + 0.5: the same function, rounded otherwise (as a runtime's own kernels are)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.tanh(0.5 * x) + 0.5


def with_gates(model: nn.Module, make: type[nn.Module]) -> nn.Module:
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(getattr(module, "gate", None), nn.Sigmoid):
            module.gate = make()
    return model


def wrong_gate(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    model.layer2[0].se.gate = ExportsAnotherGate()
    return model


def dropped_unit(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    model.layer1[1] = DroppedWhenExported(model.layer1[1])
    return model


@pytest.mark.parametrize("suffix, tamper", [(".pt2", wrong_gate), (".pt2", dropped_unit), (".pt", wrong_gate)])
def test_a_wrong_operator_or_a_dropped_layer_is_caught(tmp_path: Path, suffix: str, tamper) -> None:
    model = network()  # well-conditioned (BN statistics as after training)
    tampered = tamper(model)
    x = example_input(model, 2, None)
    with torch.no_grad():
        assert torch.equal(tampered(x), model(x))  # in eager, the same network
    earlier = tmp_path / f"m{suffix}"  # a file already there, which the refused export must leave alone
    earlier.write_bytes(b"an earlier export")
    with pytest.raises(ExportError, match="more than float32 rounding explains .* computes something else"):
        export_model(tampered, earlier, force=True)
    assert earlier.read_bytes() == b"an earlier export" and [p.name for p in tmp_path.iterdir()] == [earlier.name]


def test_a_fresh_deep_network_rounded_otherwise_passes_and_a_wrong_one_does_not() -> None:
    """SE-ResNet-164, fresh: float32 rounding moves its outputs (~150) by ~3, so the former fixed bound (1e-3 of the
    largest output) called the same network computed with another sigmoid formula wrong; the measured bound passes
    it. In a fresh SE-ResNet-110 (rounding ~0.2% of its outputs) a hard-sigmoid gate or a dropped unit lands ~20x
    beyond the bound. (In SE-ResNet-164, whose rounding is ~2% of its outputs, they land ~2x beyond it: in so
    chaotic a network only a change of tens of percent can be told from rounding.)"""
    with torch.no_grad():
        for name in ("se_resnet164", "se_resnet110"):
            torch.manual_seed(0)
            model = create_model(name).eval()
            inputs = _check_inputs(example_input(model, 2, None), dynamic=True)
            if name == "se_resnet164":
                found = _check_close(model, with_gates(model, TanhSigmoid), inputs, "the same network")
                largest = max(float(model(x).abs().max()) for x in inputs)
                assert found.max_abs_diff > 1e-4 + 1e-3 * largest  # what the former check refused
                continue
            dropped = copy.deepcopy(model)
            dropped.layer1[1] = nn.Identity()
            for wrong in (with_gates(model, nn.Hardsigmoid), dropped):
                with pytest.raises(ExportError, match="computes something else"):
                    _check_close(model, wrong, inputs, "a wrong network")


def test_export_of_fresh_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("se_resnet20", "se_mobilenet_v1"):
        assert main(["export", "--model", name, "--output", str(tmp_path / f"{name}.pt2"), "--input-size", "32"]) == 0
        assert "against float64" in capsys.readouterr().out


@pytest.mark.slow
def test_onnx_check_catches_a_wrong_gate(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    with pytest.raises(ExportError, match="computes something else"):
        export_model(wrong_gate(network()), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []  # checked before it was written


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_with_fresh_weights(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`senet export --model M` (ONNX, run in onnxruntime; the model's own input size) for every registered model."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    assert main(["export", "--model", name, "--output", str(tmp_path / "m.onnx")]) == 0, capsys.readouterr().err
