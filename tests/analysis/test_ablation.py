"""`senet ablate` on tiny data: runs as folders, skip/resume, --list/--only/--collect, one-line errors;
schedules that follow --epochs."""

import csv
import shlex

import pytest

from senet.cli import build_parser, main
from senet.cli.train import train_overrides
from senet.engine.config import ScheduleConfig
from senet.engine.recipes import resolve_config
from senet.engine.schedule import fit_to_epochs
from senet.engine.train import prepare_config

DATA = "synthetic:train=32,val=8,size=8,classes=3"
FLAGS = ["--model", "se_resnet20", "--data", DATA, "--input-size", "8", "--epochs", "1", "--batch-size", "16",
         "--workers", "0", "--recipe", "paper-cifar"]


def test_paper_cifar_milestones_follow_epochs():
    config = resolve_config("paper-cifar", {"schedule.epochs": 15})
    assert config.schedule.milestones == (8, 11) and config.schedule.warmup_epochs == 1.0
    notes: list[str] = []
    short = resolve_config("paper-cifar", {"schedule.epochs": 5}, notes=notes)
    assert short.schedule.milestones == (3, 4) and short.schedule.warmup_epochs == 0.5
    assert len(notes) == 1 and "82/123 -> 3/4" in notes[0] and "warm-up 1 -> 0.5" in notes[0]
    kept = resolve_config("paper-cifar", {"schedule.epochs": 15, "schedule.milestones": [5, 10]})
    assert kept.schedule.milestones == (5, 10)
    imagenet, note = fit_to_epochs(ScheduleConfig(epochs=100, step_every=30), 10)
    assert imagenet.step_every == 3 and "every 30 -> 3" in note
    assert resolve_config("paper-cifar").schedule.milestones == (82, 123)


def test_ablate_trains_skips_lists_and_collects(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["ablate", "gate", *FLAGS, "--seeds", "2", "--output", str(out)]
    assert main(argv + ["--list"]) == 0
    captured = capsys.readouterr()
    commands = captured.out.splitlines()
    assert len(commands) == 8 and "numbered 0 to 7" in captured.err
    # Each listed command builds exactly the run's config.
    words = shlex.split(commands[6])  # seed-major: seed 1, then the variants in order
    args = build_parser().parse_args(words[1:])
    listed = prepare_config(args.recipe, train_overrides(args))[0]
    assert listed.model.kwargs == {"gate": "tanh"} and listed.train.seed == 1
    assert main(argv + ["--only", "0"]) == 0
    assert (out / "resnet20" / "seed-0" / "model.safetensors").is_file()
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "1 of 8 run(s) already finished" in text and "[8/8]" in text
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["variant"] for r in rows] == ["plain (resnet20)", "sigmoid", "tanh", "relu"]
    assert all(r["seeds"] == "2" and r["top1_err_std"] for r in rows)
    assert float(rows[1]["params"]) > float(rows[0]["params"]) and rows[2]["paper_top1_err"] == "23.0"
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG" and "± " in (out / "results.md").read_text()
    assert main(argv + ["--collect"]) == 0 and "already finished" not in capsys.readouterr().out
    assert main(["ablate", "gate", *FLAGS[:-2], "--recipe", "paper-cifar", "--seeds", "2", "--output", str(out),
                 "--epochs", "2"]) == 2
    assert "holds a sweep trained with other settings (schedule.epochs: 1 -> 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ablate", "gatee"], "unknown study 'gatee' (did you mean 'gate'?)"),
        (["ablate", "position", "--model", "se_vgg16_bn"], "variant SE-PRE does not fit se_vgg16_bn"),
        (["ablate", "gate", "--model", "resnet20"], "resnet20 has no SE blocks to ablate"),
        (["ablate", "grid", "--grid", "reduction"], "--grid takes KEY=V1,V2"),
        (["ablate", "grid", "--grid", "reductoin=4"], "unknown keyword 'reductoin'"),
        (["ablate", "gate", "--only", "99"], "--only 99 is not a run of this sweep"),
    ],
)
def test_ablate_bad_input_is_one_line(argv, message, tmp_path, capsys):
    model = [] if "--model" in argv else ["--model", "se_resnet20"]
    assert main(argv + model + ["--data", DATA, "--epochs", "1", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("senet: error: ") and err.count("\n") == 1 and message in err
