"""Refused in one line, where the result would be nonsense: one class, a class count that differs from the
checkpoint's, a misspelt flag taken for another; and messages that say what they mean (error rates called
errors, numbers as the user wrote them, the command that continues an interrupted ablation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from training_fixtures import TINY_DATA

from tests.interop.checkpoint_files import timm_keys

from senet.cli import main
from senet.engine.train import Trainer
from senet.engine.schedule import fit_to_epochs
from senet.engine.recipes import load_recipe
from senet.engine.config import RunConfig
from senet.errors import shown
from senet.models import create_model

TRAIN = ["--model", "se_resnet20", "--input-size", "8", "-b", "16", "--workers", "0", "--recipe", "paper-cifar"]


def error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("senet: error: ") and err.count("\n") == 1, err
    return err


def test_one_class_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = "synthetic:train=32,val=8,size=8,classes=1"
    err = error_line(capsys, "train", *TRAIN, "--data", data, "--output", str(tmp_path / "run"))
    assert f"{data} has one class (class_0); a classifier needs at least two" in err
    assert not (tmp_path / "run").exists()


def test_a_classifier_of_another_width_is_not_scored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """timm's SE-ResNet-18 weights, which name no classes: the classifier's width is the class count."""
    torch.manual_seed(0)
    weights = tmp_path / "seresnet18.safetensors"
    save_file(timm_keys(create_model("se_resnet18", num_classes=10).state_dict()), str(weights))
    data = "synthetic:train=16,val=8,size=32,classes=3"
    for argv in (["eval"], ["analyze", "se-drop"], ["analyze", "excitation", "--output", str(tmp_path / "exc")]):
        err = error_line(capsys, *argv, "--checkpoint", str(weights), "--data", data, "--workers", "0")
        assert f"the model was trained on 10 classes but {data} has 3" in err
        assert "senet train --pretrained CHECKPOINT --data DATA" in err
    assert not (tmp_path / "exc").exists()
    assert main(["eval", "--checkpoint", str(weights), "--data", data.replace("classes=3", "classes=10"),
                 "--workers", "0"]) == 0  # the same count is scored


def test_flags_are_not_abbreviated(capsys: pytest.CaptureFixture[str]) -> None:
    """`--epoch 3` after `--epochs 1` was taken as --epochs 3: now a misspelt flag is an error with a suggestion."""
    for argv, flag in ((["train", "--epochs", "1", "--epoch", "3", "--data", TINY_DATA], "--epoch 3 (did you mean '--epochs'?)"),
                       (["eval", "--checkpoint", "x", "--dat", "y"], "--dat y"),
                       (["analyze", "se-drop", "--checkpoint", "x", "--repl", "mean"], "--repl mean")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert f"error: unrecognized arguments: {flag}" in capsys.readouterr().err


def test_progress_lines_call_errors_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *TRAIN, "--data", TINY_DATA, "--epochs", "1", "--output", str(tmp_path / "run")]) == 0
    epoch_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch   1/1"))
    assert "top-1 err " in epoch_line and "top-5 err " in epoch_line


def test_numbers_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = RunConfig.from_dict({"recipe": "paper-cifar", **load_recipe("paper-cifar")}).schedule
    assert fit_to_epochs(recipe, 3)[0].warmup_epochs == 0.3  # (10% of 3 epochs, not 0.30000000000000004)
    assert [shown(v) for v in (0.1 * 3, 1e-4, 0.2, 5, [0.1 * 3, "a"])] == ["0.3", "0.0001", "0.2", "5", "[0.3, a]"]
    sweep = ["ablate", "reduction", *TRAIN, "--data", TINY_DATA, "--output", str(tmp_path / "sweep"), "--list"]
    assert main([*sweep, "--epochs", "2"]) == 0
    err = error_line(capsys, *sweep, "--epochs", "3", "--set", "schedule.warmup_epochs=0.30000000000000004")
    assert "schedule.warmup_epochs: 0.2 -> 0.3" in err and "0.30000000000000004" not in err


def test_ablate_interrupted_names_the_ablate_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def ctrl_c(self: Trainer) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_train_epoch", ctrl_c)
    argv = ["ablate", "reduction", *TRAIN, "--data", TINY_DATA, "--epochs", "1", "--output", str(tmp_path / "abl")]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "senet train --resume" not in err
    assert err.rstrip("\n").endswith(f"continue the sweep with the same command: senet {' '.join(argv)}"), err
