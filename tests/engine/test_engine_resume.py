"""Exact resume: a run SIGKILLed at random moments and resumed ends bitwise identical to an uninterrupted one."""

import json
import random
import signal
import subprocess
import time
from pathlib import Path

from training_fixtures import SENET, subprocess_env

from senet.weights.checkpoint import checkpoint_dirs

ARGS = [
    "train", "--model", "se_resnet20", "--data", "synthetic:train=256,val=32,size=10,classes=4",
    "--recipe", "paper-cifar", "--input-size", "8", "--epochs", "3", "--batch-size", "16",
    "--checkpoint-every", "3", "--deterministic", "--quiet", "--seed", "5", "--warmup-epochs", "1",
    "--schedule", "cosine", "--accum-steps", "2", "--ema-decay", "0.9", "--label-smoothing", "0.1",
]
TIMING = {"images_per_s", "train_seconds", "val_seconds"}  # everything else must match exactly


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path):
    env = subprocess_env()
    reference = tmp_path / "reference"
    subprocess.run(SENET + ARGS + ["--workers", "0", "--output", str(reference)], env=env, check=True, timeout=300)

    # The interrupted run loads with worker processes: the data a step sees does not depend on them.
    run = tmp_path / "run"
    rng = random.Random()
    kills = []
    for attempt in range(2):
        command = SENET + ARGS + ["--workers", "2"] + (["--resume", str(run)] if attempt else ["--output", str(run)])
        process = subprocess.Popen(command, env=env)
        seen = {p.name for p in checkpoint_dirs(run)}
        deadline = time.monotonic() + 120
        while process.poll() is None and not {p.name for p in checkpoint_dirs(run)} - seen and time.monotonic() < deadline:
            time.sleep(0.02)
        delay = rng.uniform(0.0, 0.8)  # anywhere: mid-step, mid-checkpoint-write, mid-evaluation
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        kills.append((round(delay, 3), process.returncode, [p.name for p in checkpoint_dirs(run)]))
    subprocess.run(SENET + ARGS + ["--workers", "2", "--resume", str(run)], env=env, check=True, timeout=300)

    for weights in ("model.safetensors", "model_ema.safetensors"):
        assert (run / weights).read_bytes() == (reference / weights).read_bytes(), kills
    assert metrics(run) == metrics(reference), kills
    assert not list((run / "checkpoints").glob(".tmp-*"))
