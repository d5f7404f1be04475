"""convert -> eval -> predict -> train --pretrained, through the command line, on tiny models and PNG folders."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from checkpoint_files import batch, hub_folder, network, png_folder
from training_fixtures import SENET, subprocess_env

import senet
from senet.cli import main
from senet.weights.checkpoint import load_weights


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A timm train.py-style checkpoint of a CIFAR SE-ResNet-20 with a DDP prefix (senet keys, no metadata)."""
    import argparse

    root = tmp_path_factory.mktemp("foreign")
    model = network()
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "args": argparse.Namespace(model="se_resnet20"), "epoch": 9}, root / "last.pth.tar")
    return root / "last.pth.tar", model


def test_convert_eval_predict(tmp_path: Path, foreign: tuple[Path, torch.nn.Module], capsys: pytest.CaptureFixture[str]) -> None:
    source, model = foreign
    converted = tmp_path / "se20.safetensors"
    assert main(["convert", str(source), str(converted), "--model", "se_resnet20"]) == 0
    assert capsys.readouterr().out.strip() == ("senet se_resnet20 -> se_resnet20 (num_classes=4), 152 tensors "
                                                f"(the checkpoint's 'state_dict', 'module.' prefix removed); wrote {converted}")
    state, record = load_weights(converted)
    assert record.model == "se_resnet20" and record.kwargs == {"num_classes": 4, "in_chans": 3} and record.source == "senet"
    x = batch()
    with torch.no_grad():
        assert torch.equal(senet.load_model(converted)(x), model(x))
    assert main(["convert", str(source), str(converted), "--model", "se_resnet20"]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(source), str(converted), "--model", "se_resnet20", "--force"]) == 0
    capsys.readouterr()
    # senet eval takes it (4 classes: synthetic data of 4 classes at 32 px)
    assert main(["eval", "--checkpoint", str(converted), "--data", "synthetic:classes=4,train=8,val=8,size=32", "--json", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "se_resnet20" and result["images"] == 8
    # and senet predict
    images = png_folder(tmp_path / "imgs", classes=("a",), per_class=2)
    assert main(["predict", "--checkpoint", str(converted), str(images / "val"), "--json", "--top", "4"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and sum(entry["prob"] for entry in rows[0]["top"]) == pytest.approx(1.0, abs=1e-5)


def test_convert_hub_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = hub_folder(tmp_path / "hub", network("se_resnet18", layout="torchvision"))
    assert main(["convert", str(hub), str(tmp_path / "se18.safetensors")]) == 0
    assert capsys.readouterr().out.startswith("timm seresnet18 -> se_resnet18 (layout=torchvision, num_classes=4)")
    _, record = load_weights(tmp_path / "se18.safetensors")
    assert record.classes == ("ant", "bee", "cat", "dog") and record.eval_crop_fraction == 0.9
    assert record.interpolation == "bicubic" and record.mean == (0.5, 0.5, 0.5) and record.source == "timm"


def test_train_pretrained_replaces_the_classifier(tmp_path: Path, foreign: tuple[Path, torch.nn.Module],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    source, model = foreign
    data = png_folder(tmp_path / "data", classes=("x", "y", "z"), per_class=4)
    run = tmp_path / "run"
    argv = ["train", "--pretrained", str(source), "--model", "se_resnet20", "--data", f"folder:{data}", "--epochs", "1",
            "--batch-size", "4", "--input-size", "32", "--workers", "0", "--lr", "1e-9", "--output", str(run)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "pretrained weights: senet se_resnet20 -> se_resnet20 (num_classes=4), 152 tensors" in out
    assert "pretrained weights: classifier replaced: 4 -> 3 classes (new weights, to be trained)" in out
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["pretrained"] == str(source) and config["model"]["source"] == "senet"
    assert config["model"]["name"] == "se_resnet20"
    trained, record = load_weights(run / "model.safetensors")
    assert record.classes == ("x", "y", "z") and trained["fc.weight"].shape == (3, 64)
    # the backbone started from the file's weights (a learning rate of 1e-9 keeps them)
    assert torch.allclose(trained["stem.0.weight"], model.state_dict()["stem.0.weight"], atol=1e-6)
    # a resume rebuilds the network from config.yaml, without reading the file again
    source_copy = source.with_name("moved.pth.tar")
    source.rename(source_copy)
    try:
        assert main(argv[:-2] + ["--resume", str(run), "--epochs", "2"]) == 0
    finally:
        source_copy.rename(source)
    assert "resuming from" in capsys.readouterr().out


def test_train_pretrained_adapts_the_input_convolution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = hub_folder(tmp_path / "hub", network("se_resnet18", layout="torchvision"))
    argv = ["train", "--pretrained", str(hub), "--data", "synthetic:classes=4,train=8,val=4,size=32,channels=1",
            "--epochs", "1", "--batch-size", "8", "--workers", "0", "--output", str(tmp_path / "run"), "--quiet"]
    assert main(argv) == 0
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["model"]["name"] == "se_resnet18" and config["model"]["source"] == "timm"
    assert config["model"]["kwargs"] == {"layout": "torchvision"}
    _, record = load_weights(tmp_path / "run" / "model.safetensors")
    assert record.kwargs["in_chans"] == 1


def test_convert_subprocess_bad_file(tmp_path: Path) -> None:
    (tmp_path / "w.pth").write_bytes(b"")
    result = subprocess.run([*SENET, "convert", str(tmp_path / "w.pth"), str(tmp_path / "out.safetensors")],
                            capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"senet: error: {tmp_path / 'w.pth'} is empty (0 bytes): the download or copy failed; fetch the file again\n"
    assert not (tmp_path / "out.safetensors").exists()


def test_peer_fixture_through_a_training_checkpoint_and_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """timm's legacy_seresnet18 (weights from the fixture's seed, logits timm computed) as timm's train.py
    saves it, with a DDP prefix: load_model, convert and the converted file give timm's logits."""
    import argparse

    from peer_fixtures import PEERS, peer_input, peer_state_dict, read_fixture, relative_difference

    peer = next(p for p in PEERS if p.architecture == "legacy_seresnet18")
    fixture = read_fixture(peer)
    state = peer_state_dict(fixture["keys"], fixture["seed"])
    path = tmp_path / "last.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 1,
                "args": argparse.Namespace(model=peer.architecture)}, path)
    x = peer_input(peer.side)
    with torch.no_grad():
        assert relative_difference(senet.load_model(path)(x), fixture["logits"]) < 1e-5
        assert main(["convert", str(path), str(tmp_path / "c.safetensors")]) == 0
        assert capsys.readouterr().out.startswith("timm legacy_seresnet18 -> se_resnet18 (layout=paper")
        assert relative_difference(senet.load_model(tmp_path / "c.safetensors")(x), fixture["logits"]) < 1e-5
