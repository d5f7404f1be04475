"""torchrun with two CPU processes (gloo): DDP training, sharded evaluation, rank-0 outputs, restarts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_fixtures import subprocess_env

from senet.weights.checkpoint import checkpoint_dirs
from senet.engine.evaluate import evaluate_network
from senet.interop.load import load_for_evaluation

DATA = "synthetic:train=96,val=30,size=8,classes=4"
ARGS = ["-m", "senet", "train", "--model", "se_resnet20", "--data", DATA, "--recipe", "paper-cifar", "--input-size", "8",
        "--batch-size", "8", "--workers", "0", "--quiet", "--deterministic"]


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def worker_pids(parent: int) -> list[int]:
    """Child processes of `parent` (torchrun's elastic agent) from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                children.append(int(entry.name))
    return children


def train_reference(output: Path, env: dict) -> list[dict]:
    """Two epochs with torchrun's two processes; the rows of its metrics.jsonl."""
    result = subprocess.run(torchrun(*ARGS, "--epochs", "2", "--output", str(output)), env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_torchrun_two_gloo_processes_train_and_evaluate(tmp_path):
    env = subprocess_env()
    reference = tmp_path / "reference"
    rows = train_reference(reference, env)
    # 96 images over 2 processes of batch 8: 6 steps an epoch, every image once; the global batch is 16.
    assert [(row["epoch"], row["step"], row["train_images"]) for row in rows] == [(1, 6, 96), (2, 12, 96)]
    # The 30 validation images were split 15 / 15 and summed: the single-process evaluation agrees.
    single = evaluate_network(load_for_evaluation(reference), DATA, workers=0)
    assert single["images"] == 30
    assert single["top1_err"] == pytest.approx(rows[-1]["val_top1_err"], abs=1e-3)
    assert single["loss"] == pytest.approx(rows[-1]["val_loss"], abs=1e-4)

    # torchrun -m senet eval: each process evaluates half, rank 0 prints the sums.
    evaluated = subprocess.run(torchrun("-m", "senet", "eval", "--checkpoint", str(reference), "--data", DATA,
                                        "--workers", "0", "--json"), env=env, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout)["images"] == 30


@pytest.mark.slow  # (exact resume after SIGKILL in one process is in make test: tests/engine/test_engine_resume.py)
def test_torchrun_restarts_a_killed_worker_and_ends_bitwise_identical(tmp_path):
    """The same job with --max-restarts and --resume: a SIGKILLed worker makes torchrun restart both
    processes, which continue from the last checkpoint and end with the same weights, bit for bit."""
    env = subprocess_env()
    reference, run = tmp_path / "reference", tmp_path / "run"
    train_reference(reference, env)
    command = torchrun("--max-restarts=1", *ARGS, "--epochs", "2", "--checkpoint-every", "2", "--resume", str(run))
    agent = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not checkpoint_dirs(run) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    workers = worker_pids(agent.pid)
    assert workers, "torchrun started no workers"
    os.kill(workers[-1], signal.SIGKILL)
    _, stderr = agent.communicate(timeout=300)
    assert agent.returncode == 0, stderr[-3000:]
    assert "failed (exitcode: -9)" in stderr  # the kill happened while the job ran, and it recovered
    assert (run / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()


WORKER = """
import os, sys, torch
import senet
from senet.engine.distributed import DistEnv, init_process_group, shutdown

def gloo_threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{task}/comm").read().strip())
        except OSError:
            pass
    return sum("gloo" in name for name in names)

init_process_group(DistEnv.from_environ(), torch.device("cpu"))
running = gloo_threads()
import torch._dynamo  # (imported on first use while training: by the optimizer, torch.compile)
with torch.no_grad():
    senet.create_model("se_resnet20", num_classes=4).eval()(torch.randn(2, 3, 8, 8))
shutdown()
with open(os.path.join(sys.argv[1], os.environ["RANK"]), "w") as f:  # (one file each: stdout interleaves)
    f.write(f"{running} {gloo_threads()}")
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_shutdown_frees_the_process_group_after_torch_dynamo_was_imported(tmp_path):
    """The group must be freed (its gloo threads joined) at shutdown. When torch.distributed.nn was first
    imported while the group existed, its default arguments held the group; the gloo threads then lived
    on into interpreter exit and aborted one run in about twenty ("terminate called without an active
    exception")."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = subprocess.run(torchrun(str(script), str(tmp_path)), env=subprocess_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = [tuple(map(int, (tmp_path / rank).read_text().split())) for rank in ("0", "1")]
    for running, after in counts:
        assert running > 0 and after == 0
