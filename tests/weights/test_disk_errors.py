"""A read-only or full file system, for real (tmpfs mounts): every command that writes says so in one line with
the cause, exits 2, leaves every earlier file as it was and no temporary file behind."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from file_systems import snapshot, tmpfs  # noqa: F401  (tmpfs is a fixture)
from training_fixtures import TINY_DATA

from senet.cli import main

TRAIN = ["--model", "se_resnet20", "--data", TINY_DATA, "--input-size", "8", "-b", "16", "--workers", "0",
         "--recipe", "paper-cifar", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run (4 steps an epoch, checkpoints step-4 and step-8)."""
    output = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *TRAIN, "--epochs", "2", "--output", str(output)]) == 0
    return output


def error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("senet: error: ") and err.count("\n") == 1, err
    return err.removeprefix("senet: error: ").rstrip("\n")


def copy_run(run: Path, into: Path, *, last_step: int | None = None) -> Path:
    """A copy of `run` in `into`; with `last_step`, as if killed after that checkpoint (its metrics line only)."""
    target = into / "run"
    if last_step is None:
        shutil.copytree(run, target)
        return target
    (target / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.yaml", target)
    (target / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().splitlines(keepends=True)[0])
    shutil.copytree(run / "checkpoints" / f"step-{last_step:08d}", target / "checkpoints" / f"step-{last_step:08d}")
    return target


def test_read_only(tmpfs, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmpfs("ro", 8192, fill=lambda path: copy_run(run, path), read_only=True)
    before = snapshot(ro)
    target = ro / "run"
    assert error_line(capsys, "train", *TRAIN, "--epochs", "3", "--resume", str(target)) == (
        f"cannot write {target}/config.yaml: read-only file system")  # (not the cleanup's second error)
    assert error_line(capsys, "train", *TRAIN, "--output", str(ro / "new")) == (
        f"cannot create folder {ro}/new: read-only file system")
    assert error_line(capsys, "export", "--checkpoint", str(run), "--output", str(ro / "m.pt2")) == (
        f"cannot write {ro}/m.pt2: read-only file system")
    assert error_line(capsys, "convert", str(run / "model.safetensors"), str(ro / "c.safetensors")) == (
        f"cannot write {ro}/c.safetensors: read-only file system")
    assert error_line(capsys, "analyze", "excitation", "--checkpoint", str(run), "--workers", "0", "--output",
                      str(ro / "excitation")) == f"cannot create folder {ro}/excitation: read-only file system"
    assert error_line(capsys, "ablate", "reduction", *TRAIN, "--epochs", "1", "--output", str(ro / "ablate")) == (
        f"cannot create folder {ro}/ablate: read-only file system")
    assert error_line(capsys, "demo", "--output", str(ro / "demo")) == f"cannot create folder {ro}/demo: read-only file system"
    assert snapshot(ro) == before


def test_disk_full_while_checkpointing(tmpfs, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Killed after epoch 1 on a disk with room for less than one more checkpoint (each is ~2.2 MB).
    disk = tmpfs("disk", 3072, fill=lambda path: copy_run(run, path, last_step=4))
    target = disk / "run"
    before = snapshot(target)
    line = error_line(capsys, "train", "--resume", str(target), "--quiet")
    assert re.fullmatch(
        rf"no space left on device while writing checkpoint step 8 to {target}/checkpoints \(needs ~2 MB\); "
        rf"the previous checkpoint {target}/checkpoints/step-00000004 is intact", line), line
    after = snapshot(target)
    assert {k: v for k, v in after.items() if k != "metrics.jsonl"} == {k: v for k, v in before.items() if k != "metrics.jsonl"}
    assert (target / "metrics.jsonl").read_text().startswith((run / "metrics.jsonl").read_text().splitlines()[0])
    assert sorted(p.name for p in (target / "checkpoints").iterdir()) == ["step-00000004"]  # no .tmp-step-* left
    assert not list(target.glob(".*"))  # no temporary file, no lock file
    # The checkpoint left is whole: a resume on a disk with room finishes the run as if nothing happened.
    roomy = copy_run(target, disk.parent / "roomy")
    assert main(["train", "--resume", str(roomy), "--quiet"]) == 0
    assert snapshot(roomy)["model.safetensors"] == snapshot(run)["model.safetensors"]


def test_disk_full_on_export_and_convert(tmpfs, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    disk = tmpfs("small", 300)  # a senet se_resnet20 file is ~1.1 MB
    # (TorchScript's own file writer aborted the whole process on a full disk; ONNX is written by Python's files,
    # as .pt2 is, which the read-only test covers: its export alone takes ~20 s on 2 cores)
    assert error_line(capsys, "export", "--checkpoint", str(run), "--output", str(disk / "m.pt")) == (
        f"cannot write {disk}/m.pt: no space left on device")
    assert error_line(capsys, "convert", str(run / "model.safetensors"), str(disk / "c.safetensors")) == (
        f"cannot write {disk}/c.safetensors: no space left on device")
    assert list(disk.iterdir()) == []  # no temporary file left

