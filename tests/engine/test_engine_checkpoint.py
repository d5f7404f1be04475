"""Checkpoints: round trip, atomic replacement, corruption detection, weights_only trainer state."""

import errno
import hashlib
import json
import os
import pickle

import pytest
import torch

from senet.weights import checkpoint as ckpt
from senet.weights.checkpoint import (
    CheckpointError,
    checkpoint_dirs,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from senet.engine.train import rng_state, set_rng_state
from senet.errors import FileSystemError
from senet.weights.record import CheckpointRecord


def state(value: float) -> dict:
    return {"w": torch.full((3, 2), value), "n": torch.tensor(7)}


def trainer(step: int) -> dict:
    return {"step": step, "history": [{"epoch": 1, "val_loss": 0.5, "note": None}], "rng": [rng_state()]}


def test_round_trip_with_metadata_ema_and_rng(tmp_path):
    path = save_checkpoint(tmp_path, 12, model=state(1.0), trainer=trainer(12), record=CheckpointRecord("x"), ema=state(0.5))
    assert path.name == "step-00000012"
    loaded = load_checkpoint(path)
    assert loaded.step == 12 and loaded.record == CheckpointRecord("x")
    assert torch.equal(loaded.model["w"], state(1.0)["w"]) and torch.equal(loaded.ema["w"], state(0.5)["w"])
    assert loaded.trainer["history"] == trainer(12)["history"]
    # The RNG states survive weights_only loading and restore the generators exactly.
    expected = torch.rand(3)
    set_rng_state(loaded.trainer["rng"][0])
    assert torch.equal(torch.rand(3), expected)


def test_only_the_newest_are_kept_and_leftovers_are_ignored(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model=state(step), trainer=trainer(step), record=CheckpointRecord("x"), keep=2)
    (tmp_path / "checkpoints" / ".tmp-step-00000004-99").mkdir()  # a writer killed mid-way
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-00000003", "step-00000002"]
    assert latest_checkpoint(tmp_path).step == 3


def test_corrupt_newest_checkpoint_is_reported_and_the_last_good_one_used(tmp_path):
    save_checkpoint(tmp_path, 1, model=state(1.0), trainer=trainer(1), record=CheckpointRecord("x"))
    newest = save_checkpoint(tmp_path, 2, model=state(2.0), trainer=trainer(2), record=CheckpointRecord("x"))
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-5])  # truncated
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt or truncated"):
        load_checkpoint(newest)
    warnings = []
    loaded = latest_checkpoint(tmp_path, warn=warnings.append)
    assert loaded.step == 1 and len(warnings) == 1 and "step-00000002" in warnings[0]
    (newest / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="no readable meta.json"):
        load_checkpoint(newest)


def test_every_checkpoint_broken_is_an_error_and_none_is_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    path = save_checkpoint(tmp_path, 1, model=state(1.0), trainer=trainer(1), record=CheckpointRecord("x"))
    (path / "trainer.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no checkpoint in .* can be loaded"):
        latest_checkpoint(tmp_path, warn=lambda _: None)


def test_trainer_state_is_never_unpickled_beyond_weights_only(tmp_path):
    path = save_checkpoint(tmp_path, 1, model=state(1.0), trainer=trainer(1), record=CheckpointRecord("x"))

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    evil = path / "trainer.pt"
    torch.save({"payload": Exploit()}, evil, pickle_module=pickle)
    record = json.loads((path / "meta.json").read_text())
    record["files"]["trainer.pt"] = hashlib.sha256(evil.read_bytes()).hexdigest()  # a forged, consistent checkpoint
    (path / "meta.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"trainer\.pt cannot be loaded .*(posix|os)\.system"):
        load_checkpoint(path)


def test_a_failed_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, model=state(1.0), trainer=trainer(1), record=CheckpointRecord("x"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "step-00000001").iterdir()}

    def disk_full(source, target):  # the folder written, then the disk refuses (as a full one would, any time)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.os, "replace", disk_full)
    with pytest.raises(FileSystemError, match=r"^no space left on device while writing checkpoint step 2 to .*checkpoints "
                       r"\(needs ~0\.\d MB\); the previous checkpoint .*step-00000001 is intact$"):
        save_checkpoint(tmp_path, 2, model=state(2.0), trainer=trainer(2), record=CheckpointRecord("x"))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]  # no .tmp-step-* left
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "step-00000001").iterdir()} == before
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoints" / "step-00000001").step == 1


def test_weights_file_round_trip_and_truncation(tmp_path):
    path = tmp_path / "model.safetensors"
    save_weights(path, state(3.0), CheckpointRecord("se_resnet20", classes=("a", "b")))
    loaded, record = load_weights(path)
    assert torch.equal(loaded["w"], state(3.0)["w"]) and record.classes == ("a", "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temporary left
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_weights(path)
