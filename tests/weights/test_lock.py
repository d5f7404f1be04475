"""One writer per run folder: processes started together on one --output, exactly one trains; the others are
refused in one line naming it; a killed holder leaves no lock behind."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from training_fixtures import TINY_DATA, subprocess_env

from senet.cli import main
from senet.weights.lock import LOCK_FILE, FolderInUse, FolderLock, command_line

TRAIN = ["--model", "se_resnet20", "--data", TINY_DATA, "--input-size", "8", "-b", "16", "--workers", "0",
         "--recipe", "paper-cifar", "--epochs", "1", "--json"]

# Imports what training needs, touches READY, waits for the file GO (so that every process starts at the same
# moment), then runs `senet ARGV`.
STARTER = """
import os, sys, time
import senet.engine.train
from senet.cli import main
go, ready, *argv = sys.argv[1:]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
sys.argv = ["senet", *argv]
sys.exit(main(argv))
"""

# Takes the lock of a folder, says so, and holds it until killed.
HOLDER = """
import sys, time
from senet.weights.lock import FolderLock
FolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_processes_started_together_one_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output, go = tmp_path / "run", tmp_path / "go"
    seeds = (1, 2, 3)
    ready = [tmp_path / f"ready-{seed}" for seed in seeds]
    processes = [
        subprocess.Popen([sys.executable, "-c", STARTER, str(go), str(flag), "train", *TRAIN, "--seed", str(seed),
                          "--output", str(output)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=subprocess_env())
        for seed, flag in zip(seeds, ready)
    ]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.01)
    go.touch()
    results = [(p.pid, seed, *p.communicate(timeout=300), p.returncode) for p, seed in zip(processes, seeds)]
    winners = [r for r in results if r[4] == 0]
    assert len(winners) == 1, results
    pid, seed, out, _, _ = winners[0]
    for other_pid, _, other_out, err, code in results:
        if other_pid == pid:
            continue
        assert code == 2 and err.count("\n") == 1 and "weights:" not in other_out, (other_out, err)
        # Refused while the winner trained (or, had it already finished, because its run is there).
        assert (f"senet: error: {output} is in use by process {pid} on " in err and f"--seed {seed} " in err
                and "running since" in err) or "already holds a run" in err, err
    # The weights in the folder are the winner's: its config, and `senet eval` gives the loss it reported.
    assert yaml.safe_load((output / "config.yaml").read_text())["train"]["seed"] == seed
    reported = json.loads(out.strip().splitlines()[-1])
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(output), "--workers", "0", "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == round(reported["val_loss"], 4)
    assert not (output / LOCK_FILE).exists()


def test_every_writing_command_is_refused_while_another_holds_the_folder_until_it_is_killed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                               env=subprocess_env())
    try:
        assert process.stdout.readline() == "locked\n"
        (folder / "keep.txt").write_text("an earlier file")
        commands = [
            ["train", *TRAIN, "--output", str(folder)],
            ["train", *TRAIN, "--resume", str(folder)],
            ["demo", "--output", str(folder)],
            ["ablate", "reduction", *TRAIN, "--output", str(folder)],
            ["analyze", "excitation", "--checkpoint", str(tmp_path / "missing"), "--output", str(folder)],
        ]
        for argv in commands:
            capsys.readouterr()
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith(f"senet: error: {folder} is in use by process {process.pid} on "), err
            assert "wait for it to finish" in err
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE, "keep.txt"]
        assert (folder / "keep.txt").read_text() == "an earlier file"
    finally:
        process.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the lock
        process.wait()
    assert (folder / LOCK_FILE).exists()  # the file is left, the lock is not: nothing to clean up by hand
    with FolderLock(folder) as lock:
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
        with FolderLock(folder):  # nests within one process (demo -> its excitation study)
            pass
        assert lock.path.exists()
        with pytest.raises(FolderInUse, match=f"process {os.getpid()} "):  # another process would be refused
            _refused(folder)
    assert not (folder / LOCK_FILE).exists()


def _refused(folder: Path) -> None:
    """Try the lock of `folder` through a second descriptor, as another process would (flock locks are per open file)."""
    fd = os.open(folder / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FolderInUse(f"{folder} is in use by {FolderLock(folder).holder()}") from None
    finally:
        os.close(fd)


def test_a_refused_command_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "new"
    assert main(["train", *TRAIN, "--output", str(output), "--set", "optim.name=bogus"]) == 2
    assert not output.exists()  # (a train refused in its setup does not lock, so makes nothing)
    with FolderLock(output):
        assert output.is_dir()
    assert not output.exists()  # the lock made the folder and nothing else was written: it goes too
    capsys.readouterr()


def test_the_holder_is_named_by_the_command_the_user_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    for argv0 in ("/usr/bin/senet", "/src/senet/__main__.py"):  # `senet ...` and `python -m senet ...`
        monkeypatch.setattr(sys, "argv", [argv0, "train", "--output", "my runs/a"])
        assert command_line() == "senet train --output 'my runs/a'"
