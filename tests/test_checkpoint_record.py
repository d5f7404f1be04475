"""The checkpoint record: typed, round-trips through JSON, and reads the headers senet wrote before it was
typed (the fixture is the header of a run written by commit 63d4453: `senet train --model se_resnet20
--data digits --epochs 1`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import senet
from senet.weights.checkpoint import CheckpointError, load_weights, read_record, save_weights
from senet.weights.record import CheckpointRecord
from senet.weights.state import StateDictMismatchError, load_strict

OLD_HEADER = (Path(__file__).parent / "fixtures" / "senet-63d4453-record.json").read_text().strip()


def test_an_old_header_reads_as_a_typed_record():
    record = CheckpointRecord.from_json(OLD_HEADER)
    assert record.model == "se_resnet20" and record.kwargs == {"num_classes": 10, "in_chans": 1}
    assert record.classes == tuple("0123456789") and record.channels == 1 and record.input_size == 16
    assert record.mean == (0.3055,) and record.std == (0.3761,) and record.crop_fraction == 1.0
    assert (record.data, record.recipe, record.epoch, record.step, record.source) == ("digits", "demo", 1, 22, "senet")
    # Written back, it is the same JSON object (plus the source senet now names).
    assert json.loads(record.to_json()) == json.loads(OLD_HEADER) | {"source": "senet"}


def test_a_file_with_an_old_header_loads_as_the_network_it_names(tmp_path):
    torch.manual_seed(0)
    network = senet.create_model("se_resnet20", num_classes=10, in_chans=1).eval()
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path), metadata={"senet": OLD_HEADER})
    loaded = senet.load_model(path)
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(loaded(x), network(x))
    assert loaded.pretrained_cfg["label_names"] == list("0123456789") and loaded.pretrained_cfg["input_size"] == [1, 16, 16]


def test_round_trip_keeps_unknown_keys(tmp_path):
    record = CheckpointRecord.from_dict({"model": "se_resnet20", "kwargs": {"num_classes": 3}, "future_key": [1, 2]})
    assert record.extra == {"future_key": [1, 2]}
    path = tmp_path / "w.safetensors"
    save_weights(path, {"w": torch.zeros(2)}, record)
    assert read_record(path) == record and load_weights(path)[1] == record
    assert CheckpointRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize("header, message", [
    ("{not json", "unreadable senet metadata"),
    ('{"kwargs": {}}', "without a model name"),
    ('{"model": "x", "kwargs": [1]}', "of the wrong form"),
])
def test_a_damaged_header_is_one_checkpoint_error(tmp_path, header, message):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"senet": header})
    with pytest.raises(CheckpointError, match=message):
        read_record(path)


def test_a_file_without_a_record_has_none(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    assert read_record(path) is None


def test_one_error_names_the_first_differing_keys_and_shapes():
    network = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = network.state_dict()
    wrong = dict(state) | {"0.weight": torch.zeros(5, 3)}
    with pytest.raises(StateDictMismatchError, match=r"0\.weight is \[5, 3\] in the file but \[4, 3\] in the model; fix it"):
        load_strict(network, wrong, "the weights", "the net", "fix it")
    missing = {k: v for k, v in state.items() if k != "1.bias"}
    with pytest.raises(StateDictMismatchError, match=r"1 keys missing \(1\.bias\)"):
        load_strict(network, missing, "the weights", "the net", "fix it")
    with pytest.raises(StateDictMismatchError, match=r"1 unexpected keys \(extra\)"):
        load_strict(network, dict(state) | {"extra": torch.zeros(1)}, "the weights", "the net", "fix it")
