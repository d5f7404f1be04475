"""`senet bench` and senet.bench: what is measured and reported (never how fast)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from senet.bench import BenchConfig, cpu_peak_bytes, markdown_table, run_bench
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
    result = run_bench(BenchConfig(baseline="resnet20", mode="train", **TINY))
    assert [m.name for m in (result.model, result.baseline)] == ["se_resnet20", "resnet20"]
    assert len(result.model.times) == len(result.baseline.times) == 2
    assert result.ratio > 0 and result.ratio_of_minima > 0
    # SE adds parameters (and their gradients and momentum) and pooled activations: more bytes, never fewer.
    assert result.model.peak_bytes > result.baseline.peak_bytes > 0
    assert result.model.saved_bytes > 0
    row = result.as_dict()
    assert {"model_ms", "baseline_ms", "ratio", "model_peak_mb", "memory_ratio"} <= row.keys()
    assert row["environment"]["threads"] == 1


def test_fused_against_naive_on_one_network():
    result = run_bench(BenchConfig(baseline="se_resnet20", mode="train", se_impl="fused", baseline_se_impl="naive", **TINY))
    assert (result.model.se_impl, result.baseline.se_impl) == ("fused", "naive")
    # The naive SE keeps each unit's unscaled residual for its backward pass; the fused one does not.
    assert result.model.saved_bytes < result.baseline.saved_bytes
    table = markdown_table([result])
    assert "se_resnet20 (fused) | se_resnet20 (naive) | train | eager" in table
    assert len(table.splitlines()) == 3


def test_cli_json(capsys):
    assert main(["bench", "--model", "se_resnet20", "--input", "16", "--batch", "2", "--repeats", "2",
                 "--warmup", "1", "--threads", "1", "--channels-last", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["model"] == "se_resnet20" and row["baseline"] == "resnet20" and row["mode"] == "infer"
    assert row["model_ms"] > 0 and row["baseline_ms"] > 0 and row["ratio"] > 0
    assert row["config"]["channels_last"] and row["model_peak_mb"] is None  # memory: training only


def test_cli_single_model_text(capsys):
    assert main(["bench", "--model", "resnet20", "--input", "16", "--batch", "1", "--repeats", "1",
                 "--warmup", "0", "--mode", "train", "--no-memory", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "resnet20 (fused)" in out and "ratio" not in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "se_resnt50"], "unknown model 'se_resnt50'"),
        (["--model", "se_resnet20", "--device", "cuda"], "no CUDA device"),
        (["--model", "se_resnet20", "--batch", "0"], "batch must be >= 1"),
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


@pytest.mark.gpu
def test_cuda_bench_bf16_channels_last():
    result = run_bench(BenchConfig(model="se_resnet50", baseline="resnet50", mode="train", batch=8, input_size=64,
                                   device="cuda", amp=True, channels_last=True, repeats=2, warmup=1))
    assert result.model.peak_bytes > 0 and result.ratio > 0
    assert "gpu" in result.environment


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
