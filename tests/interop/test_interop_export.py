"""senet export: ONNX (run in onnxruntime), TorchScript and torch.export programs, each against eager."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from checkpoint_files import META, network, senet_file

from senet.cli import main
from senet.errors import SenetError
from senet.interop.export import export_model


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return network()


def test_onnx_dynamic_batch_standard_ops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx = pytest.importorskip("onnx")  # the dev extra has it; CI runs this
    onnxruntime = pytest.importorskip("onnxruntime")
    checkpoint = senet_file(tmp_path / "w.safetensors", network())
    output = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "dynamic batch" in out and "onnxruntime" in out and "max abs difference" in out
    graph = onnx.load(str(output))
    assert {node.domain for node in graph.graph.node} <= {"", "ai.onnx"}  # no custom operators
    ops = {node.op_type for node in graph.graph.node}
    assert {"Sigmoid", "Mul", "Conv", "Gemm"} <= ops  # the SE block's formula,
    assert {"GlobalAveragePool", "Resize"} <= ops  # in onnxruntime's blocked-layout form (senet.interop.onnx_form)
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    model = network()
    for n in (1, 5):
        x = torch.randn(n, 3, 32, 32)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        with torch.no_grad():
            assert torch.allclose(got, model(x), atol=1e-4)
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(output)]) == 2  # no silent overwrite
    assert "already exists" in capsys.readouterr().err


def test_torchscript(tmp_path: Path, net: torch.nn.Module) -> None:
    result = export_model(net, tmp_path / "m.pt", format="torchscript")
    assert result.checked_with == "torch.jit.trace" and result.max_abs_diff < 1e-4
    assert result.notes[0].startswith("traced: the program records this model's operations")
    program = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(program(x), net(x), atol=1e-5)


def test_exported_program_dynamic_batch(tmp_path: Path, net: torch.nn.Module) -> None:
    result = export_model(net, tmp_path / "m.pt2", format="exported-program", input_size=40)
    assert result.dynamic_batch and result.input_shape == (2, 3, 40, 40)
    assert all(op.startswith("aten.") for op in result.operators) and "aten.sigmoid.default" in result.operators
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.randn(5, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(program(x), net(x), atol=1e-5)


def test_export_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--model", "se_resnet20", "--output", str(tmp_path / "m.bin")]) == 2
    assert "cannot tell the format from" in capsys.readouterr().err
    assert main(["export", "--model", "se_resnet20", "--output", str(tmp_path / "m.pt"), "--opset", "17"]) == 2
    assert "--opset applies to ONNX only" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the export extra were not installed
    assert main(["export", "--model", "se_resnet20", "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'senet[export]'" in err and "onnxscript" in err
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(SenetError, match="does not exist"):
        export_model(network(), tmp_path / "no" / "m.pt")


def test_bench_onnxruntime(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    argv = ["bench", "--model", "se_resnet20", "--runtime", "onnxruntime", "--repeats", "2", "--warmup", "1", "--threads", "1",
            "--quiet", "--batch", "2", "--input", "24"]
    assert main(argv + ["--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["baseline"] == "resnet20" and set(result["median_ms"]) == {
        "se_resnet20 eager", "se_resnet20 onnxruntime", "resnet20 eager", "resnet20 onnxruntime"}
    assert "se_resnet20/resnet20 onnxruntime" in result["ratios"] and max(result["max_abs_diff"].values()) < 1e-4
    assert result["batch"] == 2 and result["input_shape"] == [3, 24, 24] and result["threads"] == 1
    assert main(argv + ["--mode", "train"]) == 2
    assert "drop --mode train" in capsys.readouterr().err


def test_bench_onnxruntime_rejects_training(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", "se_resnet20", "--runtime", "onnxruntime", "--mode", "train", "--compile"]) == 2
    assert "drop --mode train, --compile" in capsys.readouterr().err


def test_meta_checkpoint_exports_its_input_size(tmp_path: Path) -> None:
    checkpoint = senet_file(tmp_path / "w.safetensors", network(), META | {"input_size": 24})
    from senet import load_model

    result = export_model(load_model(checkpoint), tmp_path / "m.pt2", format="exported-program", static_batch=True)
    assert result.input_shape == (2, 3, 24, 24) and not result.dynamic_batch
