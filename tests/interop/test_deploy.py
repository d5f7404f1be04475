"""Deployment: the SE block's runtime form in ONNX, self-describing exports, predict / eval of an exported
file, INT8 quantization with SE in float, and OpenVINO (skipped where the `openvino` extra is missing)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_files import CLASSES, META, network, png_folder, senet_file

import senet
from senet.cli import main
from senet.interop.export import CONFIG_FILE, export_model

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from senet.interop.onnx_form import se_nodes  # noqa: E402  (needs onnx)
from senet.interop.runtimes import ExportedClassifier, optimized_operators, read_config  # noqa: E402

FOLDER_CLASSES = ("ant", "bee", "cat", "dog")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    return senet_file(root / "w.safetensors", network(), META | {"eval_crop_fraction": 0.8, "input_size": 24})


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("deploy-onnx") / "m.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(output)]) == 0
    return output


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return png_folder(tmp_path_factory.mktemp("deploy-images"), classes=FOLDER_CLASSES, per_class=6)


def test_runtime_form_keeps_se_in_the_blocked_layout(tmp_path: Path) -> None:
    se, plain = network("se_resnet20"), network("resnet20")
    files = {}
    for name, model, form in (("se", se, False), ("se_plain_form", se, True), ("plain", plain, False)):
        files[name] = tmp_path / f"{name}.onnx"
        result = export_model(model, files[name], static_batch=True, plain_form=form)
        assert result.max_abs_diff < 1e-4
    ops = {op.op_type for op in onnx.load(str(files["se"])).graph.node}
    assert {"GlobalAveragePool", "Resize", "Mul", "Sigmoid"} <= ops and not ops & {"ReduceMean", "ReduceSum", "Div"}
    counts = {name: optimized_operators(path) for name, path in files.items()}
    # the exporter's form converts every SE block's map out of onnxruntime's NCHWc layout and back into it;
    # in the runtime form no SE block converts a map back (ResNet-20's own conversions are its option-A
    # shortcuts, Slice and Pad, which onnxruntime runs in NCHW)
    assert counts["se"]["ReorderInput"] == counts["plain"]["ReorderInput"] == 5
    assert counts["se_plain_form"]["ReorderInput"] == 5 + 12
    assert counts["se"]["ReorderOutput"] < counts["se_plain_form"]["ReorderOutput"]
    assert counts["se"]["Upsample"] == 9 and counts["se"]["GlobalAveragePool"] == 10  # 9 gates and squeezes, the head


def test_se_nodes_found_by_structure(tmp_path: Path) -> None:
    for name, blocks, forms in (("se_resnet20", 9, (False, True)), ("resnet20", 0, (False,))):
        for form in forms:
            path = tmp_path / f"{name}-{form}.onnx"
            export_model(network(name), path, plain_form=form)
            graph = onnx.load(str(path))
            names = set(se_nodes(graph))
            by_name = {node.name: node for node in graph.graph.node}
            assert sum(by_name[n].op_type == "Mul" for n in names) == blocks
            assert sum(by_name[n].op_type == "Sigmoid" for n in names) == blocks
            assert sum(by_name[n].op_type == "Conv" for n in names) == 2 * blocks  # fc1, fc2 (not the unit's convs)


def test_exports_describe_themselves(checkpoint: Path, exported: Path, tmp_path: Path) -> None:
    config = read_config(exported)
    assert config["model"] == "se_resnet20" and config["class_names"] == CLASSES
    assert config["mean"] == pytest.approx(META["mean"]) and config["std"] == pytest.approx(META["std"])
    assert config["input_size"] == [3, 24, 24] and config["crop_pct"] == pytest.approx(0.8)
    assert config["interpolation"] == "bilinear" and config["model_kwargs"]["num_classes"] == 4
    model = senet.load_model(checkpoint)
    export_model(model, tmp_path / "m.pt", format="torchscript")
    extra = {CONFIG_FILE: ""}
    torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert json.loads(extra[CONFIG_FILE])["class_names"] == CLASSES
    export_model(model, tmp_path / "m.pt2", format="exported-program")
    with zipfile.ZipFile(tmp_path / "m.pt2") as archive:
        name = next(n for n in archive.namelist() if n.endswith(f"extra/{CONFIG_FILE}"))
        assert json.loads(archive.read(name))["mean"] == pytest.approx(META["mean"])


def test_predict_from_the_exported_file_matches_the_checkpoint(checkpoint: Path, exported: Path, images: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", str(images / "val"), "--top", "5", "--json", "--batch-size", "5"]
    assert main(argv + ["--checkpoint", str(checkpoint)]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(argv + ["--checkpoint", str(exported)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got) == len(expected) == 24
    for a, b in zip(got, expected):
        assert a["path"] == b["path"]
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]] and a["top"][0]["class"] in CLASSES
        assert [t["prob"] for t in a["top"]] == pytest.approx([t["prob"] for t in b["top"]], abs=1e-4)


def test_eval_of_the_exported_file_matches_the_checkpoint(checkpoint: Path, exported: Path, images: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "--data", f"folder:{images}", "--json", "--workers", "0", "--batch-size", "7"]
    assert main(argv + ["--checkpoint", str(checkpoint)]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(argv + ["--checkpoint", str(exported)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["images"] == expected["images"] == 24 and got["model"] == "se_resnet20"
    assert got["top1_err"] == expected["top1_err"] and got["loss"] == pytest.approx(expected["loss"], abs=1e-4)
    assert main(argv + ["--checkpoint", str(exported), "--input-size", "32"]) == 2
    assert "do not apply to an exported file" in capsys.readouterr().err


def test_static_batch_file_runs_any_batch(checkpoint: Path, tmp_path: Path) -> None:
    model = senet.load_model(checkpoint)
    export_model(model, tmp_path / "s.onnx", static_batch=True, batch=4)
    deployed = ExportedClassifier(tmp_path / "s.onnx")
    x = torch.randn(6, 3, 24, 24)
    with torch.no_grad():
        assert torch.allclose(deployed(x), model(x), atol=1e-4)
    with pytest.raises(senet.errors.SenetError, match="takes inputs"):
        deployed(torch.randn(2, 3, 32, 32))


def test_quantize_keeps_se_in_float(checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    int8, int8_se = tmp_path / "m.int8.onnx", tmp_path / "m.int8se.onnx"
    base = ["quantize", "--checkpoint", str(checkpoint), "--data", f"folder:{images}", "--calibration-images", "8"]
    assert main(base + ["--output", str(int8)]) == 0
    out = capsys.readouterr().out
    assert "int8 QDQ" in out and "calibrated on 8 images" in out and "54 SE nodes (squeeze, excitation) kept in float" in out
    assert main(base + ["--output", str(int8_se), "--quantize-se"]) == 0
    assert "54 SE nodes (squeeze, excitation) quantized too" in capsys.readouterr().out
    assert main(base + ["--output", str(int8)]) == 2 and "already exists" in capsys.readouterr().err
    for path, se_float in ((int8, True), (int8_se, False)):
        graph = onnx.load(str(path))
        producers = {out: node.op_type for node in graph.graph.node for out in node.output}
        convs = [n for n in graph.graph.node if n.op_type == "Conv"]
        int8_convs = sum(producers.get(n.input[1]) == "DequantizeLinear" for n in convs)
        assert int8_convs == len(convs) - (18 if se_float else 0)  # every conv but the SE blocks' fc1, fc2
        scales = [n for n in graph.graph.node if n.op_type == "Mul"]
        assert len(scales) == 9
        # the scale is int8 either way (its map is the unit's last convolution's int8 output)
        assert all([producers.get(i) for i in n.input] == ["DequantizeLinear", "DequantizeLinear"] for n in scales)
        gates = [n for n in graph.graph.node if n.op_type == "Sigmoid"]
        assert len(gates) == 9
        gate_inputs_quantized = [producers.get(n.input[0]) == "DequantizeLinear" for n in gates]
        assert not any(gate_inputs_quantized) if se_float else all(gate_inputs_quantized)
        config = read_config(path)
        assert config["class_names"] == CLASSES and config["quantization"]["se_in_float"] is se_float
    # the deployed artifact is checked with the same commands
    argv = ["eval", "--data", f"folder:{images}", "--json", "--workers", "0"]
    assert main(argv + ["--checkpoint", str(checkpoint)]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert main(argv + ["--checkpoint", str(int8)]) == 0
    quantized = json.loads(capsys.readouterr().out)
    assert quantized["images"] == 24 and abs(quantized["loss"] - fp32["loss"]) < 0.25
    assert main(["predict", "--checkpoint", str(int8), str(images / "val" / "ant"), "--top", "2"]) == 0
    assert capsys.readouterr().out.count("\n") == 6


def test_quantize_errors(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", "--checkpoint", str(checkpoint), "--data", "digits", "--output", str(tmp_path / "m.bin")]) == 2
    assert "name it *.onnx" in capsys.readouterr().err
    assert main(["quantize", "--checkpoint", str(checkpoint), "--data", f"folder:{tmp_path / 'none'}",
                 "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and not (tmp_path / "m.onnx").exists()
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert main(["predict", "--checkpoint", str(tmp_path / "junk.onnx"), str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_openvino_runs_the_exported_file(exported: Path, images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("openvino")
    x = torch.randn(3, 3, 24, 24)
    a, b = ExportedClassifier(exported, "openvino"), ExportedClassifier(exported, "onnxruntime")
    assert torch.allclose(a(x), b(x), atol=1e-4)
    argv = ["predict", str(images / "val" / "bee"), "--json", "--checkpoint", str(exported)]
    assert main(argv) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(argv + ["--runtime", "openvino"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [[t["class"] for t in r["top"]] for r in got] == [[t["class"] for t in r["top"]] for r in expected]


@pytest.mark.slow
def test_bench_runtimes(capsys: pytest.CaptureFixture[str]) -> None:
    runtimes = "onnxruntime,openvino" if _has("openvino") else "onnxruntime"
    argv = ["bench", "--model", "se_resnet20", "--runtime", runtimes, "--repeats", "2", "--warmup", "1", "--threads", "1",
            "--quiet", "--batch", "2", "--input", "32", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    names = {f"{m} {r}" for m in ("se_resnet20", "resnet20") for r in ("eager", *runtimes.split(","))}
    assert set(result["median_ms"]) == names
    reorders = result["onnxruntime_reorders"]
    assert reorders["se_resnet20"]["ReorderInput"] == reorders["resnet20"]["ReorderInput"]
    with pytest.raises(SystemExit) as refused:  # argparse's refusal: usage and one line, exit status 2
        main(["bench", "--model", "se_resnet20", "--runtime", "tensorrt"])
    assert refused.value.code == 2
    assert "onnxruntime, openvino" in capsys.readouterr().err


def test_missing_openvino_is_one_line(exported: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)
    assert main(["predict", "--checkpoint", str(exported), str(tmp_path), "--runtime", "openvino"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'senet[openvino]'" in err


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_digits_like_quantization_is_close(tmp_path: Path) -> None:
    """INT8 logits of a calibrated model stay close to fp32 on the calibration distribution."""
    images = png_folder(tmp_path / "imgs", classes=FOLDER_CLASSES, per_class=4)
    model = senet.load_model(senet_file(tmp_path / "w.safetensors", network(), META))
    from senet.interop.quantize import quantize_model

    result = quantize_model(model, f"folder:{images}", tmp_path / "q.onnx", calibration_images=16)
    assert result.calibration_images == 16 and result.se_nodes == 54
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32))
    with torch.no_grad():
        fp32 = model(x)
    int8 = ExportedClassifier(result.path)(x)
    assert (int8 - fp32).abs().max() < 0.2 * fp32.abs().max()
