"""`senet train`, `senet eval`, `senet demo` from the command line: flags, outputs, one-line errors."""

import json
from pathlib import Path

import pytest
import yaml

from senet.cli import main

DATA = "synthetic:train=32,val=12,size=8,classes=3"
TRAIN = ["train", "--model", "se_resnet20", "--data", DATA, "--input-size", "8", "--epochs", "1", "--batch-size", "8",
         "--workers", "0", "--quiet"]


def test_train_then_eval_json(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(TRAIN + ["--output", str(run), "--reduction", "4", "--se-stages", "3,4", "--lr", "0.02",
                         "--set", "optim.nesterov=true", "--label-smoothing", "0.1"]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["recipe"] == "paper-imagenet"  # the default for synthetic data
    assert config["model"]["kwargs"] == {"reduction": 4, "se_stages": [3, 4]}
    assert (config["optim"]["lr"], config["optim"]["lr_batch"], config["optim"]["nesterov"]) == (0.02, None, True)
    assert config["optim"]["label_smoothing"] == 0.1
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--data", DATA, "--json", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"top1_err", "top5_err", "loss", "images", "images_per_s"} <= set(result)
    assert result["images"] == 12 and result["model"] == "se_resnet20" and result["input_size"] == 8
    assert main(["eval", "--checkpoint", str(run / "model.safetensors"), "--data", DATA, "--workers", "0"]) == 0
    assert "top-1 error" in capsys.readouterr().out


def test_resume_continues_a_finished_run_for_more_epochs(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(TRAIN + ["--output", str(run)]) == 0
    capsys.readouterr()
    assert main(TRAIN[:-1] + ["--epochs", "2", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "resuming with changed settings: schedule.epochs: 1 -> 2" in out and "resuming from" in out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "se_resnet20", "--data", "digit"], "unknown data 'digit' (did you mean 'digits'?)"),
        (["train", "--model", "se_resnett20", "--data", DATA], "unknown model 'se_resnett20'"),
        (["train", "--model", "resnet20", "--data", DATA, "--reduction", "8"], "resnet20 has no SE blocks"),
        (["train", "--data", DATA, "--recipe", "paper-mobile"], "names no model; pass --model"),
        (["train", "--model", "se_resnet20", "--data", DATA, "--set", "optim.lrr=1"], "unknown setting 'optim.lrr'"),
        (["train", "--model", "se_resnet20", "--data", DATA, "--set", "nonsense"], "--set takes section.key=value"),
        (["train", "--model", "se_resnet20", "--data", "folder:/nonexistent"], "data folder /nonexistent does not exist"),
        (["eval", "--checkpoint", "/nonexistent", "--data", DATA], "checkpoint /nonexistent does not exist"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert main(argv + (["--output", str(tmp_path / "x")] if argv[0] == "train" else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("senet: error: ") and err.count("\n") == 1
    assert message in err


def test_eval_refuses_data_with_other_classes(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(TRAIN + ["--output", str(run)]) == 0
    assert main(["eval", "--checkpoint", str(run), "--data", "synthetic:classes=5", "--workers", "0"]) == 2
    assert "trained on 3 classes but synthetic:classes=5 has 5" in capsys.readouterr().err


def test_demo_trains_both_networks_and_writes_the_table_and_figures(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "model        top-1 err top-5 err   params   MMACs train time  images/s" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("se_resnet20 ", "resnet20 "))}
    assert set(lines) == {"se_resnet20", "resnet20"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    params = {row["model"]: row["params"] for row in summary["rows"]}
    assert params["se_resnet20"] > params["resnet20"]
    for figure in ("curves.png", "excitation.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(tmp_path / figure) in out
    assert Path(tmp_path / "se_resnet20" / "model.safetensors").is_file()
