"""`senet bench` and senet.bench: what is measured and reported (never how fast)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

import senet
from senet.analysis import override_excitation
from senet.bench import BenchConfig, cpu_peak_bytes, markdown_table, run_bench, source_commit
from senet.cli import main
from senet.errors import ConfigError

TINY = dict(model="se_resnet20", batch=2, input_size=16, repeats=2, warmup=1, threads=1)


def test_cpu_peak_bytes_sees_what_was_allocated():
    size = 4 * 2**20

    def allocate_two_then_free():
        a = torch.empty(size // 4)  # float32: `size` bytes
        b = torch.empty(size // 4)
        del a, b

    peak = cpu_peak_bytes(allocate_two_then_free)
    assert 2 * size <= peak < 2 * size + 2**20


def test_train_bench_measures_both_models_and_memory():
    start = time.perf_counter()
    result = run_bench(BenchConfig(baseline="resnet20", mode="train", **(TINY | {"repeats": 3})))
    elapsed = time.perf_counter() - start
    model, baseline = result.model, result.baseline
    assert [model.name, baseline.name] == ["se_resnet20", "resnet20"]
    # One wall-clock and one CPU time per timed round for each subject, in seconds, all inside this call.
    assert len(model.times) == len(baseline.times) == len(model.cpu_times) == len(baseline.cpu_times) == 3
    assert 0 < sum(model.times) + sum(baseline.times) < elapsed
    # The ratio is the median of the per-round ratios (the two timed back to back), not of the medians.
    per_round = sorted(m / b for m, b in zip(model.times, baseline.times))
    assert result.ratio == per_round[1]
    assert result.cpu_ratio == sorted(m / b for m, b in zip(model.cpu_times, baseline.cpu_times))[1]
    assert result.ratio_of_medians == pytest.approx(statistics.median(model.times) / statistics.median(baseline.times))
    assert result.ratio_of_minima == pytest.approx(min(model.times) / min(baseline.times))
    # SE adds parameters (and their gradients and momentum) and pooled activations: more bytes, never fewer.
    assert model.peak_bytes > baseline.peak_bytes
    # A step's peak holds the activations saved for its backward pass, and the weights besides.
    assert model.peak_bytes > model.saved_bytes and baseline.peak_bytes > baseline.saved_bytes
    # Twice the batch: twice the saved activations (less the per-channel BN statistics), a higher peak.
    double = run_bench(BenchConfig(mode="train", **(TINY | {"batch": 4, "repeats": 1}))).model
    assert 1.9 * model.saved_bytes < double.saved_bytes <= 2 * model.saved_bytes
    assert double.peak_bytes > model.peak_bytes
    row = result.as_dict()
    assert (row["model_ms"], row["baseline_ms"]) == (round(model.median_ms, 3), round(baseline.median_ms, 3))
    assert (row["ratio"], row["ratio_of_minima"]) == (round(result.ratio, 4), round(result.ratio_of_minima, 4))
    assert row["memory_ratio"] == round(model.peak_bytes / baseline.peak_bytes, 4)
    assert row["environment"]["threads"] == 1


def test_fused_against_naive_on_one_network(monkeypatch):
    # (the fused merge from FUSE_MIN_ELEMENTS on; these tensors are smaller)
    monkeypatch.setattr(importlib.import_module("senet.layers.merge"), "FUSE_MIN_ELEMENTS", 0)
    result = run_bench(BenchConfig(baseline="se_resnet20", mode="train", se_impl="fused", baseline_se_impl="naive", **TINY))
    assert (result.model.se_impl, result.baseline.se_impl) == ("fused", "naive")
    # The naive SE keeps each unit's unscaled residual for its backward pass; the fused one does not.
    assert result.model.saved_bytes < result.baseline.saved_bytes
    table = markdown_table([result])
    assert "se_resnet20 (fused) | se_resnet20 (naive) | train | eager" in table
    assert len(table.splitlines()) == 3


def test_cli_json(capsys):
    assert main(["bench", "--model", "se_resnet20", "--input", "16", "--batch", "2", "--repeats", "3",
                 "--warmup", "1", "--threads", "1", "--channels-last", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["model"] == "se_resnet20" and row["baseline"] == "resnet20" and row["mode"] == "infer"
    # The summary figures come from the per-round times the row carries, one per requested round.
    model, baseline = (m["times_ms"] for m in row["measurements"])
    assert len(model) == len(baseline) == 3
    assert (row["model_ms"], row["baseline_ms"]) == (statistics.median(model), statistics.median(baseline))
    # (times rounded to 1 us, the ratio to 4 digits: equal within what the rounding moves)
    per_round = statistics.median(m / b for m, b in zip(model, baseline))
    assert row["ratio"] == pytest.approx(per_round, rel=1e-3 / min(model + baseline) + 1e-4)
    assert row["environment"]["commit"] == source_commit()  # the table names the code that produced it
    assert row["config"]["channels_last"] and row["model_peak_mb"] is None  # memory: training only


def test_cli_single_model_text(capsys):
    assert main(["bench", "--model", "resnet20", "--input", "16", "--batch", "1", "--repeats", "1",
                 "--warmup", "0", "--mode", "train", "--no-memory", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "  resnet20 " in out and "(fused)" not in out and "ratio" not in out  # a plain model has no SE to fuse
    assert out.startswith("train, batch 1, input 16, cpu")


def test_cli_labels_the_real_input_size_and_the_se_implementation(capsys):
    assert main(["bench", "--model", "se_resnet20", "-b", "1", "--repeats", "1", "--warmup", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("infer, batch 1, input 32, cpu")  # the model's own size, not "default"
    labels = [line.split("  ")[1].strip() for line in out.splitlines()[2:4]]
    assert labels == ["se_resnet20 (fused)", "resnet20"]


def test_cli_training_memory_leaves_no_profiler_lines(tmp_path):
    # The profiler's C++ side writes `USDT:... profiler_start` to file descriptor 2: only a subprocess sees it.
    result = subprocess.run(
        [sys.executable, "-m", "senet", "bench", "--model", "resnet20", "--input-size", "8", "-b", "1", "--repeats", "1",
         "--warmup", "0", "--mode", "train", "--amp"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "USDT" not in result.stderr + result.stdout
    assert "measuring the training memory of resnet20" in result.stderr  # the harness's own lines still pass
    assert "bf16 autocast" in result.stdout  # a bare --amp is bf16


def test_cli_old_and_new_flag_spellings_agree():
    from senet.cli import build_parser

    parser = build_parser()
    old = parser.parse_args(["bench", "--model", "m", "--batch", "4", "--input", "64", "--amp"])
    new = parser.parse_args(["bench", "--model", "m", "--batch-size", "4", "--input-size", "64", "--amp", "bf16"])
    short = parser.parse_args(["bench", "--model", "m", "-b", "4", "--input-size", "64", "--amp=bf16"])
    for args in (old, new, short):
        assert (args.batch_size, args.input_size, args.amp) == (4, 64, "bf16")
    assert parser.parse_args(["bench", "--model", "m"]).amp == "none"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "se_resnt50"], "unknown model 'se_resnt50'"),
        (["--model", "se_resnet20", "--device", "cuda"], "no CUDA device"),
        (["--model", "se_resnet20", "--amp", "fp16"], "senet bench measures --amp bf16"),
        (["--model", "resnet20", "--reduction", "4"], "resnet20 has no SE blocks"),
    ],
)
def test_cli_user_errors_are_one_line(argv, message, capsys):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["bench", *argv, "--repeats", "1", "--warmup", "0", "--input", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("senet: error:")


def test_config_checks_choices():
    with pytest.raises(ConfigError, match="unknown mode"):
        BenchConfig(model="se_resnet20", mode="fit")


def test_standard_table_script(tmp_path: Path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "se_overhead.py"
    spec = importlib.util.spec_from_file_location("se_overhead", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    output = tmp_path / "table.md"
    assert script.main(["--pairs", "se_resnet20:resnet20", "--input", "16", "--batch", "2", "--repeats", "1",
                        "--warmup", "0", "--threads", "1", "--no-compile", "--cpu-only", "--output", str(output)]) == 0
    text = output.read_text()
    assert "| se_resnet20 | resnet20 | infer | eager |" in text
    assert "| se_resnet20 | resnet20 | train | eager |" in text
    assert "| se_resnet20 (fused) | se_resnet20 (naive) | train | eager |" in text
    assert "Command: `python benchmarks/se_overhead.py --pairs se_resnet20:resnet20" in text
    assert f" at commit {source_commit()} on " in text and ", 1 torch threads), torch " in text


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_source_commit_names_the_commit_and_uncommitted_source(tmp_path: Path):
    assert source_commit(tmp_path).startswith("unknown")  # no src/senet here
    (tmp_path / "src" / "senet").mkdir(parents=True)
    module = tmp_path / "src" / "senet" / "m.py"
    module.write_text("x = 1\n")
    assert source_commit(tmp_path).startswith("unknown")  # not a git checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "one"]):
        subprocess.run(git + args, check=True, capture_output=True)
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (tmp_path / "notes.md").write_text("outside src/")
    assert source_commit(tmp_path) == head
    module.write_text("x = 2\n")
    assert source_commit(tmp_path) == head + "-dirty"


@pytest.mark.gpu
def test_cuda_bench_bf16_channels_last():
    result = run_bench(BenchConfig(model="se_resnet50", baseline="resnet50", mode="train", batch=8, input_size=64,
                                   device="cuda", amp=True, channels_last=True, repeats=3, warmup=1))
    model, baseline = result.model, result.baseline
    assert len(model.times) == len(baseline.times) == 3
    assert result.ratio == sorted(m / b for m, b in zip(model.times, baseline.times))[1]
    # SE adds parameters (and their gradients and momentum) and pooled activations: more bytes, never fewer;
    # a step's peak holds the activations saved for its backward pass.
    assert model.peak_bytes > baseline.peak_bytes
    assert model.peak_bytes > model.saved_bytes and baseline.peak_bytes > baseline.saved_bytes
    assert result.environment["gpu"] == torch.cuda.get_device_name()


def test_bench_leaves_no_tensors_behind():
    """Measuring frees what it built: rows of a table run one after another in one process."""
    import gc
    import warnings

    def live_elements() -> int:
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sum(o.numel() for o in gc.get_objects() if isinstance(o, torch.Tensor))

    config = BenchConfig(model="se_resnet20", baseline="resnet20", mode="train", batch=2, input_size=16,
                         repeats=1, warmup=1, threads=1)
    run_bench(config)
    before = live_elements()
    run_bench(config)
    assert live_elements() <= before


def _script(name: str):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_floor_script_times_every_reference(capsys: pytest.CaptureFixture[str]):
    """benchmarks/se_floor.py: one row per reference block, each a positive ratio to the plain network."""
    script = _script("se_floor")
    assert script.main(["--batch", "4", "--steps", "1", "--rounds", "1", "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "[" in line]
    assert [row.split(" | ")[0][2:] for row in rows] == ["scale", "scale+ds", "squeeze+scale", "se"]
    assert all(float(row.split(" | ")[1].split()[0]) > 0 for row in rows)


def test_floor_references_replace_the_excitation_only():
    """The reference `scale` leaves the network a function of its input with every gate at 0.5."""
    script = _script("se_floor")
    torch.manual_seed(0)
    model = senet.create_model("se_resnet20", in_chans=1).eval()
    x = torch.randn(2, 1, 16, 16)
    blocks = [m for m in model.modules() if isinstance(m, senet.layers.SqueezeExcitation)]
    with torch.no_grad(), override_excitation({block: 0.5 for block in blocks}):
        expected = model(x)
    for block in blocks:
        block.excitation = types.MethodType(script.REFERENCES["scale"], block)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


def test_op_times_script(capsys: pytest.CaptureFixture[str]):
    assert _script("op_times").main(["--steps", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| in a step |" in out and "| alone |" in out and "| alone, caches swept |" in out
