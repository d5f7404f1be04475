"""senet.load_model on every file form, and a one-line SenetError for every bad file (nothing executed)."""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_files import CLASSES, META, batch, hub_folder, network, senet_file
from safetensors.torch import save_file

import senet
from senet.weights.checkpoint import save_checkpoint, save_weights
from senet.weights.record import CheckpointRecord
from senet.interop.load import load_pretrained


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return network()


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _write(kind: str, path: Path, state: dict[str, torch.Tensor]) -> None:
    if kind == "bare":
        torch.save(state, path)
    elif kind == "ddp":
        torch.save({"module." + k: v for k, v in state.items()}, path)
    elif kind == "compiled":
        torch.save({"_orig_mod." + k: v for k, v in state.items()}, path)
    elif kind == "timm-train":  # timm's train.py: the command line as a Namespace, a numpy metric
        torch.save({"epoch": 3, "arch": "se_resnet20", "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
                    "args": argparse.Namespace(model="se_resnet20", lr=0.1, amp=False), "metric": np.float64(71.5),
                    "version": 2}, path)
    elif kind == "model-key":
        torch.save({"model": {"module." + k: v for k, v in state.items()}, "epoch": 1, "best_acc": np.float32(0.5)}, path)
    elif kind == "legacy-format":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif kind == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))


@pytest.mark.parametrize(
    "kind, name",
    [("bare", "w.pth"), ("ddp", "w.pt"), ("compiled", "w.bin"), ("timm-train", "w.pth.tar"), ("model-key", "w.pth"),
     ("legacy-format", "w.pth"), ("safetensors", "w.safetensors")],
)
def test_state_dict_forms_load_exactly(tmp_path: Path, net: torch.nn.Module, kind: str, name: str) -> None:
    path = tmp_path / name
    _write(kind, path, net.state_dict())
    model = senet.load_model(path, model="se_resnet20")
    assert not model.training
    x = batch()
    assert torch.equal(logits(model, x), logits(net, x))
    cfg = model.pretrained_cfg
    assert cfg["source"] == "senet" and cfg["model"] == "se_resnet20" and cfg["num_classes"] == 4
    assert cfg["input_size"] == [3, 32, 32] and cfg["label_names"] is None and cfg["file"] == str(path)


def test_training_checkpoint_ema(tmp_path: Path, net: torch.nn.Module) -> None:
    ema = network(seed=1)
    torch.save({"state_dict": net.state_dict(), "state_dict_ema": ema.state_dict()}, tmp_path / "c.pth.tar")
    x = batch()
    assert torch.equal(logits(senet.load_model(tmp_path / "c.pth.tar", model="se_resnet20"), x), logits(net, x))
    assert torch.equal(logits(senet.load_model(tmp_path / "c.pth.tar", model="se_resnet20", ema=True), x), logits(ema, x))


def test_senet_files_need_no_model_name(tmp_path: Path, net: torch.nn.Module) -> None:
    x = batch()
    model = senet.load_model(senet_file(tmp_path / "w.safetensors", net))
    assert torch.equal(logits(model, x), logits(net, x))
    cfg = model.pretrained_cfg
    assert cfg["label_names"] == CLASSES and cfg["mean"] == META["mean"] and cfg["crop_pct"] == 1.0
    # a run folder (its final weights and EMA weights) and a checkpoint folder
    run = tmp_path / "run"
    run.mkdir()
    save_weights(run / "model.safetensors", net.state_dict(), CheckpointRecord.from_dict(META))
    ema = network(seed=1)
    save_weights(run / "model_ema.safetensors", ema.state_dict(), CheckpointRecord.from_dict(META))
    assert torch.equal(logits(senet.load_model(run), x), logits(net, x))
    assert torch.equal(logits(senet.load_model(run, ema=True), x), logits(ema, x))
    folder = save_checkpoint(tmp_path / "run2", 7, model=net.state_dict(), trainer={"step": 7}, record=CheckpointRecord.from_dict(META))
    assert torch.equal(logits(senet.load_model(folder), x), logits(net, x))
    assert torch.equal(logits(senet.load_model(tmp_path / "run2"), x), logits(net, x))


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_hub_folder(tmp_path: Path, weights: str) -> None:
    source = network("se_resnet18", layout="torchvision")
    loaded = load_pretrained(hub_folder(tmp_path / "hub", source, weights))
    assert loaded.recognised.source == "timm" and loaded.recognised.architecture == "seresnet18"
    x = batch()
    assert torch.equal(logits(loaded.model, x), logits(source, x))
    cfg = loaded.cfg
    assert cfg["label_names"] == CLASSES and cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.25] * 3
    assert cfg["crop_pct"] == 0.9 and cfg["interpolation"] == "bicubic" and cfg["input_size"] == [3, 32, 32]


def test_classifier_replaced_and_input_conv_adapted(tmp_path: Path, net: torch.nn.Module) -> None:
    path = senet_file(tmp_path / "w.safetensors", net)
    loaded = load_pretrained(path, num_classes=7, in_chans=1)
    model = loaded.model
    assert model.fc.out_features == 7 and model.pretrained_cfg["label_names"] is None
    assert any("classifier replaced: 4 -> 7" in note for note in loaded.notes)
    assert any("adapted from 3 to 1 channels" in note for note in loaded.notes)
    # timm's rule for one channel: the sum over RGB, so a gray image gives what RGB = (g, g, g) gave
    gray = batch(channels=1)
    assert torch.allclose(model.forward_features(gray), net.forward_features(gray.expand(-1, 3, -1, -1)), atol=1e-5)
    assert len(model.pretrained_cfg["mean"]) == 1
    # more channels: repeated and rescaled by 3 / in_chans, so equal channels give the same activations
    six = load_pretrained(path, in_chans=6).model
    x = batch()
    assert torch.allclose(six(torch.cat([x, x], dim=1)), net(x), atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Bad files: one line each, nothing executed.


class Hostile:
    """A pickle whose loading would create a file (what a malicious checkpoint does)."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_files(root: Path, state: dict[str, torch.Tensor]) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its error must contain)."""
    files = {}

    def add(name: str, filename: str, phrase: str) -> Path:
        files[name] = (root / filename, phrase)
        return root / filename

    add("empty", "empty.pth", "is empty (0 bytes)").write_bytes(b"")
    add("html", "html.pth", "is an HTML page").write_text("<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>")
    good = root / "good.pth"
    torch.save(state, good)
    data = good.read_bytes()
    add("truncated", "truncated.pth", "truncated or corrupt").write_bytes(data[: len(data) // 2])
    torch.save(state, root / "legacy.pth", _use_new_zipfile_serialization=False)
    legacy = (root / "legacy.pth").read_bytes()
    add("truncated-legacy", "truncated-legacy.pth", "truncated or corrupt").write_bytes(legacy[:-100])
    with zipfile.ZipFile(add("zip", "archive.pth", "not a torch.save file"), "w") as archive:
        archive.writestr("weights/readme.txt", "hello")
    Hostile.marker = str(root / "PWNED")
    torch.save({"state_dict": state, "payload": Hostile()}, add("hostile", "hostile.pth", "wants to unpickle posix.system"))
    add("hostile-pickle", "hostile.pkl", "wants to unpickle posix.system").write_bytes(pickle.dumps(Hostile(), protocol=2))
    add("plain-pickle", "plain.pkl", "plain Python pickle").write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    add("lfs", "lfs.bin", "Git LFS pointer").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n")
    add("bad-safetensors", "bad.safetensors", "not a readable safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage" * 3)
    torch.save([1, 2, 3], add("list", "list.pth", "holds a list, not a state dict"))
    torch.save({"epoch": 3, "note": "x"}, add("no-weights", "meta.pth", "no state dict of tensors"))
    torch.save({"foo.weight": torch.zeros(2)}, add("unrecognised", "foo.pth", "unrecognised architecture"))
    save_weights(add("shape", "shape.safetensors", "fc.weight is [4, 64] in the file but [10, 64] in the model"), state,
                 CheckpointRecord.from_dict(META | {"kwargs": {"num_classes": 10}}))
    add("missing", "nothing-here.pth", "does not exist")
    (root / "hub").mkdir()
    (root / "hub" / "config.json").write_text("{}")
    add("hub-no-weights", "hub", "no model.safetensors or pytorch_model.bin")
    return files


def test_bad_files_give_one_line(tmp_path: Path, net: torch.nn.Module) -> None:
    files = _bad_files(tmp_path, net.state_dict())
    for name, (path, phrase) in files.items():
        with pytest.raises(senet.SenetError) as caught:
            senet.load_model(path)
        message = str(caught.value)
        assert phrase in message, (name, message)
        assert "\n" not in message and str(path) in message, (name, message)
    assert not (tmp_path / "PWNED").exists()  # the hostile pickles ran nothing


def test_ema_and_model_mismatches(tmp_path: Path, net: torch.nn.Module) -> None:
    torch.save({"state_dict": net.state_dict()}, tmp_path / "c.pth")
    with pytest.raises(senet.SenetError, match="has no EMA weights"):
        senet.load_model(tmp_path / "c.pth", model="se_resnet20", ema=True)
    with pytest.raises(senet.SenetError, match="holds a se_resnet20 .* not resnet20; drop --model"):
        senet.load_model(senet_file(tmp_path / "w.safetensors", net), model="resnet20")
    with pytest.raises(senet.SenetError, match="no metadata naming the model; pass --model"):
        senet.load_model(tmp_path / "c.pth", source="senet")


def test_adapt_input_conv_matches_timm() -> None:
    """timm's own adapt_input_conv output (scripts/make_adapt_input_conv_fixture.py) for 1, 2, 4 and 7 channels."""
    import json

    from senet.interop.load import adapt_input_conv

    fixture = json.loads((Path(__file__).parent / "fixtures" / "adapt_input_conv.json").read_text())
    weight = torch.tensor(fixture["weight"])
    for in_chans, expected in fixture["adapted"].items():
        assert torch.allclose(adapt_input_conv(weight, int(in_chans)), torch.tensor(expected), rtol=1e-6, atol=1e-7), in_chans


def test_extra_keywords_are_recorded(tmp_path: Path, net: torch.nn.Module) -> None:
    model = senet.load_model(senet_file(tmp_path / "w.safetensors", net), drop_rate=0.3, num_classes=2)
    assert model.drop.p == 0.3
    assert model.pretrained_cfg["kwargs"] == {"num_classes": 2, "in_chans": 3, "drop_rate": 0.3}
