"""The command line as a user meets it: one-line errors that lose nothing, defaults that fit the data,
forgiving eval and resume, the same flags everywhere, progress and results a script can read, Ctrl-C."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from training_fixtures import SENET, make_tree, subprocess_env

from senet.cli import build_parser, main
from senet.weights.checkpoint import checkpoint_dirs

DATA = "synthetic:train=24,val=8,size=8,classes=3"
TRAIN = ["train", "--model", "se_resnet20", "--data", DATA, "--input-size", "8", "--epochs", "1", "-b", "8", "-j", "0"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the SHA-256 of its bytes: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(SENET + list(argv), env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("senet: error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """`senet ARGV` in this process (a subprocess test above shows the real process prints the same): exit
    status 2 and one line on stderr."""
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return one_error_line(subprocess.CompletedProcess(list(argv), code, captured.out, captured.err))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished one-epoch run of se_resnet20 on 3 synthetic classes."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(TRAIN + ["--output", str(run), "--quiet"]) == 0
    return run


# -- Broken: resume with another network or other classes -------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "resnet20"], "was trained as se_resnet20, not resnet20; start a new run with another --output, "
                                  "or fine-tune its weights in a new run with --pretrained"),
        (["--data", "synthetic:train=24,val=8,size=8,classes=5"], "was trained on 3 classes, but synthetic:"),
        (["--reduction", "4"], "was trained with other model settings (reduction default -> 4)"),
    ],
)
def test_resume_with_another_network_is_one_line_and_loses_nothing(finished_run, flags, message, capsys):
    before = snapshot(finished_run)
    err = error_line(capsys, "train", "--resume", str(finished_run), "--epochs", "2", *flags)
    assert message in err
    assert snapshot(finished_run) == before


def test_resume_of_a_missing_folder_says_so():  # (as a process: exit status 2, one line, no traceback)
    err = one_error_line(run_cli("train", "--resume", "/nonexistent/run"))
    assert "--resume /nonexistent/run: no such run folder" in err and "--output /nonexistent/run" in err


def test_resume_from_a_checkpoint_folder_sets_newer_checkpoints_aside(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0  # steps 3 and 6
    first, second = sorted(checkpoint_dirs(run))
    capsys.readouterr()
    assert main(["train", "--resume", str(first), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"resuming from {first} (epoch 2, step 0 of 3)" in out
    assert (run / "checkpoints" / f"abandoned-{second.name}").is_dir()  # kept, out of the way
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]


# -- Broken: eval on a folder without train/, demo over an earlier demo -------------------------------


def test_eval_needs_no_training_split(tmp_path, capsys):
    root = make_tree(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--model", "se_resnet20", "--data", f"folder:{root}", "--input-size", "8", "--epochs", "1",
                 "-b", "4", "-j", "0", "--output", str(run), "--quiet"]) == 0
    shutil.rmtree(root / "train")  # only val/ is left
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--data", f"folder:{root}", "-j", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 7
    assert main(["eval", "--checkpoint", str(run), "--data", f"folder:{root / 'val'}", "-j", "0", "--json"]) == 0  # bare classes
    assert json.loads(capsys.readouterr().out)["images"] == 7


def test_demo_keeps_an_earlier_demo_unless_told(tmp_path, capsys):
    for name in ("se_resnet20", "resnet20"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights of an earlier demo")
    before = snapshot(tmp_path)
    err = error_line(capsys, "demo", "--output", str(tmp_path))
    assert "already holds an unfinished earlier demo" in err and "--overwrite" in err
    assert snapshot(tmp_path) == before


def test_a_second_demo_prints_the_first_ones_table(tmp_path, capsys):
    """`make demo` twice: the second run prints the finished demo's table, trains nothing, changes nothing."""
    import json

    for name in ("se_resnet20", "resnet20"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights of an earlier demo")
    rows = [{"model": "se_resnet20", "top1_err": 1.5, "top5_err": 0.0, "params": 274_000, "macs": 10e6,
             "train_seconds": 30.0, "images_per_s": 500.0}]
    (tmp_path / "summary.json").write_text(json.dumps({"rows": rows, "wall_seconds": 31.0, "val_images": 364,
                                                        "curves": "c.png", "excitation": "e.png"}))
    before = snapshot(tmp_path)
    assert main(["demo", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "holds the results of an earlier demo" in out and "DEMO_ARGS=--overwrite" in out
    assert "se_resnet20      1.50%" in out
    assert snapshot(tmp_path) == before


def test_train_keeps_a_finished_run_unless_told(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    assert main(TRAIN + ["--output", str(run), "--seed", "3"]) == 2
    assert "replace it with --overwrite" in capsys.readouterr().err
    assert snapshot(run) == before
    assert main(TRAIN + ["--output", str(run), "--seed", "3", "--overwrite", "--quiet"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 3


# -- Defaults that fit --------------------------------------------------------------------------------


def test_eval_without_data_uses_the_runs_data(finished_run, capsys):
    assert main(["eval", "--checkpoint", str(finished_run), "-j", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"] == DATA and result["images"] == 8


def test_folder_data_without_a_recipe_trains_at_the_models_input_size(tmp_path, capsys):
    root = make_tree(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--model", "se_resnet20", "--data", f"folder:{root}", "--epochs", "1", "-b", "4",
                 "--output", str(run), "--quiet"]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["recipe"] == "paper-imagenet" and config["data"]["input_size"] == 32  # se_resnet20's, not 224


def test_loader_workers_never_exceed_the_cores_available():
    from senet.data import AugmentedDataset, EvalSampler, EvalTransform, make_loader, open_data
    from senet.data.loader import available_cores

    val = open_data("synthetic:train=4,val=4,size=8").val
    loader = make_loader(AugmentedDataset(val, EvalTransform(8, 1.0)), EvalSampler(4), batch_size=2, workers=1000)
    assert loader.num_workers == available_cores() == len(os.sched_getaffinity(0))


def test_input_below_the_models_minimum_names_it(capsys):
    err = error_line(capsys, "train", "--model", "se_resnet50", "--data", DATA, "--input-size", "8",
                     "--output", "/nonexistent/never-made")
    assert "se_resnet50 needs inputs of at least 32 pixels" in err and "got 8" in err
    assert not Path("/nonexistent/never-made").exists()


# -- Consistent, conventional flags -------------------------------------------------------------------


def test_an_unknown_flag_gets_the_subcommands_usage_and_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--batchsize", "8"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "usage: senet train [options]  (`senet train --help` lists them)",
        "senet train: error: unrecognized arguments: --batchsize 8 (did you mean '--batch-size'?)",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--checkpoint", "x", "--amp", "bf61"], "argument --amp: invalid choice: 'bf61' (choose from"),
        (["bench", "--model", "se_resnet20", "-b", "0"], "argument -b/--batch-size/--batch: must be >= 1, got 0"),
        (["info", "se_resnet20", "--gate", "sigmoidd"], "(did you mean 'sigmoid'"),
        (["eval", "--checkpoint", "x", "--wrokers", "2"], "(did you mean '--workers'?)"),
    ],
)
def test_a_bad_value_gets_the_subcommands_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"usage: senet {argv[0]} [options]")
    assert lines[1].startswith(f"senet {argv[0]}: error: ") and message in lines[1]


def test_same_flag_names_everywhere_version_and_defaults_in_help(capsys):
    parser = build_parser()
    for command in (["train"], ["eval", "--checkpoint", "x"], ["bench", "--model", "m"]):
        args = parser.parse_args(command + ["-b", "3", "--amp", "bf16"] + (["-j", "1"] if command[0] != "bench" else []))
        assert (args.batch_size, args.amp) == (3, "bf16")
    assert parser.parse_args(["info", "m", "--input", "64"]).input_size == 64  # the older spelling
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("senet 0.")
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "images per step (default: 128)" in help_text and "autocast precision (default: none)" in help_text


def _help(parser, command: str, dest: str) -> str:
    return next(a.help for a in parser.get_default("_parsers")[command]._actions if a.dest == dest)


def test_help_names_the_choices_senet_options_declares(monkeypatch):
    """The help of --data, --recipe, the ablate study and the export suffixes is built from senet.options,
    where each value is declared once and which the implementing modules read too: a new data kind,
    recipe, study or suffix shows up without editing the CLI."""
    import senet.analysis.ablation as ablation
    import senet.data.spec as spec
    import senet.engine.recipes as recipes
    import senet.interop.export as export
    from senet import options

    assert spec.KINDS is options.DATA_KINDS and export.SUFFIXES is options.EXPORT_SUFFIXES
    assert recipes.list_recipes is options.list_recipes
    assert {name: study.table for name, study in ablation.STUDIES.items()} == options.STUDY_TABLES
    shipped = options.list_recipes()
    assert {"paper-imagenet", "paper-cifar", "paper-mobile", "demo"} <= set(shipped)
    monkeypatch.setattr(options, "DATA_KINDS", (*options.DATA_KINDS, "imagenet21k"))
    monkeypatch.setattr(options, "list_recipes", lambda: [*shipped, "my-recipe"])
    monkeypatch.setitem(options.STUDY_TABLES, "width", "Table 17")
    monkeypatch.setitem(options.EXPORT_SUFFIXES, ".onnxproto", "onnx")
    parser = build_parser()
    for command in ("train", "ablate"):
        assert _help(parser, command, "data").split(" | ") == [options.data_form(kind) for kind in options.DATA_KINDS]
        assert _help(parser, command, "data").endswith("cifar100:PATH | imagenet21k:PATH")
        assert _help(parser, command, "recipe").startswith(" | ".join([*shipped, "my-recipe", "FILE.yaml"]) + " (default")
    study = _help(parser, "ablate", "study")
    assert study.startswith(" | ".join([*options.STUDY_TABLES, options.GRID]) + " (Tables 10-17;")
    assert "width | grid" in study
    assert _help(parser, "export", "output") == "file to write (.onnx, .pt, .ts, .pt2, .onnxproto)"


def test_export_takes_the_format_from_the_suffix_export_defines(tmp_path, monkeypatch, capsys):
    import senet.interop.export as export

    formats = []

    def fake_export(model, output, *, format, **kwargs):
        formats.append(format)
        return type("Result", (), {"notes": [], "summary": lambda self: "ok"})()

    monkeypatch.setattr(export, "export_model", fake_export)
    for suffix in export.SUFFIXES:
        assert main(["export", "--model", "resnet20", "--output", str(tmp_path / f"m{suffix}")]) == 0
    assert formats == list(export.SUFFIXES.values()) and formats[list(export.SUFFIXES).index(".ts")] == "torchscript"
    assert main(["export", "--model", "resnet20", "--output", str(tmp_path / "m.bin")]) == 2
    assert capsys.readouterr().err.endswith("pass --format onnx, torchscript or exported-program\n")


def test_ablate_without_a_study_names_every_study(capsys):
    import senet.analysis.ablation as ablation

    assert main(["ablate"]) == 2
    names = [*ablation.STUDIES, ablation.GRID]
    assert f"name a study: {', '.join(names[:-1])} or {names[-1]} (with --grid)" in capsys.readouterr().err


# -- Progress and results a script can read -----------------------------------------------------------


def test_progress_lines_without_a_terminal_and_the_result_line(tmp_path, capsys):
    data = "synthetic:train=32,val=8,size=8,classes=3"
    base = ["train", "--model", "se_resnet20", "--data", data, "--input-size", "8", "--epochs", "2", "-b", "4", "-j", "0"]
    assert main(base + ["--output", str(tmp_path / "a"), "--log-every", "3"]) == 0
    out = capsys.readouterr().out.splitlines()  # captured: not a terminal
    assert [line.split("loss")[0].split() for line in out if line.startswith("epoch") and " step " in line] == [
        ["epoch", "1/2", "step", "3/8"], ["epoch", "1/2", "step", "6/8"], ["epoch", "2/2", "step", "3/8"],
        ["epoch", "2/2", "step", "6/8"]]
    assert sum(1 for line in out if line.startswith("epoch") and " step " not in line) == 2
    assert out[-1].startswith("se_resnet20 on synthetic:") and "top-1 error" in out[-1] and "after 2 epochs (16 steps" in out[-1]

    assert main(base + ["--output", str(tmp_path / "b"), "--quiet"]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert len(quiet) == 1 and quiet[0].startswith("se_resnet20 on synthetic:")
    assert main(base + ["--output", str(tmp_path / "c"), "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    metrics = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert result["val_top1_err"] == metrics[-1]["val_top1_err"] and result["steps"] == 16
    assert result["weights"] == str(tmp_path / "c" / "model.safetensors")


def test_ctrl_c_names_the_surviving_checkpoint_and_the_resume_command(tmp_path):
    run = tmp_path / "run"
    command = SENET + ["train", "--model", "se_resnet20", "--data", "synthetic:train=64,val=8,size=8,classes=3",
                       "--input-size", "8", "--epochs", "1000", "-b", "8", "-j", "0", "--checkpoint-every", "2",
                       "--output", str(run), "--quiet"]  # far more epochs than it gets: the run must still be going
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while process.poll() is None and not checkpoint_dirs(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    lines = err.splitlines()
    newest = checkpoint_dirs(run)[0]
    assert lines[0].startswith(f"senet: interrupted; the newest checkpoint is {newest} (after step ")
    assert lines[1] == f"resume with: senet train --resume {run}" and len(lines) == 2
    assert main(["train", "--resume", str(run), "--epochs", "1", "--quiet"]) == 0  # the command works as printed


# -- senet info, file permissions, the licence --------------------------------------------------------


def test_info_numbers_stages_as_se_stages_does_and_shows_small_costs(capsys):
    assert main(["info", "se_resnet20"]) == 0
    out = capsys.readouterr().out
    assert "SE      9 blocks, 3.06k params (+1.13%), 175k MACs (+0.43%)" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[6:]}
    assert rows["2"][1] == "(layer1)" and rows["4"][1] == "(layer3)" and "1" not in rows
    assert rows["2"][6] == "98.7k" and rows["4"][4] == "1.74k"  # SE MACs of stage 2, SE params of stage 4
    assert main(["info", "se_resnet50"]) == 0
    assert "5 (layer4)" in capsys.readouterr().out  # conv5_x, se_stages 5 (Table 13)


def test_files_senet_writes_have_the_users_normal_permissions(finished_run):
    mask = os.umask(0o022)
    os.umask(mask)
    expected = 0o666 & ~mask
    files = [p for p in finished_run.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"model.safetensors", "config.yaml", "metrics.jsonl", "trainer.pt", "meta.json"}
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: expected for p in files}


def test_licence_is_the_mit_licence_pyproject_names():
    root = Path(__file__).resolve().parents[1]
    text = (root / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the senet authors" in text
    assert "MIT" in next(line for line in (root / "pyproject.toml").read_text().splitlines() if line.startswith("license"))
