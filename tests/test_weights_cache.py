"""Weights already on the machine: create_model(name, pretrained=True) and list_models(pretrained=True) find
them in the Hugging Face hub cache and the torch hub checkpoint folder, laid out as timm, torchvision and
pretrainedmodels leave them, under a temporary HOME. The weights are the peer fixtures' (drawn from a
seed), so the loaded network's logits are checked against the ones timm / torchvision computed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import senet
from senet.weights.cache import PRETRAINEDMODELS_FILES, TORCHVISION_FILES, WeightsNotFoundError, wanted
from tests.peer_fixtures import PEERS, peer_input, peer_state_dict, read_fixture, relative_difference

PEER = {(p.source, p.architecture): p for p in PEERS}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in ("HF_HUB_CACHE", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def fixture_weights(source: str, architecture: str) -> tuple[dict[str, torch.Tensor], dict]:
    fixture = read_fixture(PEER[(source, architecture)])
    return peer_state_dict(fixture["keys"]), fixture


def hub_snapshot(hub: Path, repo: str, state: dict[str, torch.Tensor], revision: str = "0123abcd") -> Path:
    folder = hub / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    return snapshot


def logits_of(model: torch.nn.Module, side: int) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(peer_input(side))


def test_hub_cache_weights_load_and_give_timms_logits(home: Path) -> None:
    state, fixture = fixture_weights("timm", "seresnet50")
    hub_snapshot(home / ".cache/huggingface/hub", "timm/seresnet50.a1_in1k", state)
    model = senet.create_model("seresnet50", pretrained=True)
    assert relative_difference(logits_of(model, 64), fixture["logits"]) < 1e-5
    cfg = model.pretrained_cfg
    assert cfg["hf_hub_id"] == "timm/seresnet50.a1_in1k" and cfg["tag"] == "a1_in1k" and cfg["source"] == "timm"
    assert cfg["crop_pct"] == 0.95 and cfg["interpolation"] == "bicubic"
    assert senet.list_models(pretrained=True) == ["seresnet50.a1_in1k"]
    with pytest.raises(WeightsNotFoundError, match="seresnet50.a2_in1k"):
        senet.create_model("seresnet50.a2_in1k", pretrained=True)


def test_hf_hub_cache_and_hf_home_variables(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state, fixture = fixture_weights("timm", "seresnext26d_32x4d")
    hub_snapshot(home / "elsewhere", "timm/seresnext26d_32x4d.bt_in1k", state)
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "elsewhere"))
    model = senet.create_model("seresnext26d_32x4d", pretrained=True, num_classes=10)
    assert model.num_classes == 10 and model.pretrained_cfg["source"] == "timm"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(home / "hfhome"))
    (home / "hfhome").mkdir()
    (home / "elsewhere").rename(home / "hfhome" / "hub")
    model = senet.create_model("seresnext26d_32x4d", pretrained=True)
    assert relative_difference(logits_of(model, 64), fixture["logits"]) < 1e-5


def test_timm_legacy_weights_in_the_torch_hub_folder(home: Path) -> None:
    """timm's legacy_* weights have no hub repo: timm keeps them under their URL's name, as torch.hub does."""
    state, fixture = fixture_weights("timm-legacy", "legacy_seresnet18")
    (home / ".cache/torch/hub/checkpoints").mkdir(parents=True)
    torch.save(state, home / ".cache/torch/hub/checkpoints/seresnet18-4bb0ce65.pth")
    model = senet.create_model("legacy_seresnet18", pretrained=True)
    assert model.pretrained_cfg["source"] == "timm-legacy" and model.pretrained_cfg["tag"] == "in1k"
    assert relative_difference(logits_of(model, 64), fixture["logits"]) < 1e-5


def test_torch_hub_checkpoints_pretrainedmodels_and_torchvision(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoints = home / "torchhome" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home / "torchhome"))
    legacy, legacy_fixture = fixture_weights("timm-legacy", "legacy_seresnet50")
    torch.save(legacy, checkpoints / PRETRAINEDMODELS_FILES["se_resnet50"][0])
    plain, plain_fixture = fixture_weights("torchvision", "resnet18")
    torch.save(plain, checkpoints / TORCHVISION_FILES["resnet18"][0])
    # (timm keeps its legacy_seresnet50 under the same file name as pretrainedmodels)
    assert senet.list_models(pretrained=True) == ["legacy_seresnet50.in1k", "resnet18", "se_resnet50"]
    model = senet.create_model("se_resnet50", pretrained=True)
    assert model.layout == "paper" and model.pretrained_cfg["file"].endswith("se_resnet50-ce0d4300.pth")
    assert relative_difference(logits_of(model, 64), legacy_fixture["logits"]) < 1e-5
    model = senet.create_model("resnet18", pretrained=True)
    assert model.pretrained_cfg["source"] == "torchvision" and model.layout == "torchvision"
    assert relative_difference(logits_of(model, 64), plain_fixture["logits"]) < 1e-5


def test_none_found_says_where_it_looked(home: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as error:
        senet.create_model("se_resnet50", pretrained=True)
    message = str(error.value)
    assert "\n" not in message and "senet downloads nothing" in message
    assert str(home / ".cache/torch/hub/checkpoints") in message and "se_resnet50-ce0d4300.pth" in message
    message = str(pytest.raises(WeightsNotFoundError, senet.create_model, "seresnet50", pretrained=True).value)
    assert str(home / ".cache/huggingface/hub") in message and "timm/seresnet50.a1_in1k" in message
    with pytest.raises(WeightsNotFoundError, match="no released weights are known for se_resnet20"):
        senet.create_model("se_resnet20", pretrained=True)
    assert senet.list_models(pretrained=True) == []


def test_checkpoint_path_and_a_file_of_another_layout(home: Path, tmp_path: Path) -> None:
    state, fixture = fixture_weights("timm-legacy", "legacy_seresnet50")
    torch.save(state, tmp_path / "legacy.pth")
    model = senet.create_model("legacy_seresnet50", checkpoint_path=tmp_path / "legacy.pth")
    assert relative_difference(logits_of(model, 64), fixture["logits"]) < 1e-5
    with pytest.raises(senet.ConfigError, match="not timm's seresnet50"):
        senet.create_model("seresnet50", checkpoint_path=tmp_path / "legacy.pth")


def test_wanted_names_come_from_the_libraries() -> None:
    assert [w.repo for w in wanted("seresnet50") if w.repo][:2] == ["timm/seresnet50.a1_in1k", "timm/seresnet50.a2_in1k"]
    assert [w.file for w in wanted("legacy_seresnet50") if w.file] == ["se_resnet50-ce0d4300.pth"]


@pytest.mark.peer
def test_peer_torchvision_file_names() -> None:
    models = pytest.importorskip("torchvision.models")
    for name, files in TORCHVISION_FILES.items():
        enum = models.get_model_weights(name)
        names = [enum.DEFAULT.url.rsplit("/", 1)[-1]] + [w.url.rsplit("/", 1)[-1] for w in enum if w != enum.DEFAULT]
        assert tuple(names) == files, name


@pytest.mark.peer
def test_peer_timm_loads_the_same_cache(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """timm itself, offline, reads the hub cache built here; its logits equal senet's from the same files."""
    timm = pytest.importorskip("timm")
    constants = pytest.importorskip("huggingface_hub.constants")
    torch.manual_seed(0)
    state = timm.create_model("seresnext26d_32x4d").state_dict()
    hub_snapshot(home / ".cache/huggingface/hub", "timm/seresnext26d_32x4d.bt_in1k", state)
    # (huggingface_hub reads its cache folder and offline switch when first imported)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / ".cache/huggingface/hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    theirs = timm.create_model("seresnext26d_32x4d", pretrained=True).eval()
    ours = senet.create_model("seresnext26d_32x4d", pretrained=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


def test_train_pretrained_model_name(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`senet train --pretrained NAME` takes the cached release; the run records the file and its source."""
    import yaml

    from senet.cli import main

    state, _ = fixture_weights("timm-legacy", "legacy_seresnet18")
    (home / ".cache/torch/hub/checkpoints").mkdir(parents=True)
    torch.save(state, home / ".cache/torch/hub/checkpoints/seresnet18-4bb0ce65.pth")
    argv = ["train", "--pretrained", "legacy_seresnet18", "--data", "synthetic:classes=3,train=8,val=4,size=32",
            "--epochs", "1", "--batch-size", "8", "--workers", "0", "--output", str(home / "run")]
    assert main(argv) == 0
    assert "legacy_seresnet18 found at" in capsys.readouterr().out
    config = yaml.safe_load((home / "run" / "config.yaml").read_text())
    assert config["model"]["pretrained"].endswith("seresnet18-4bb0ce65.pth")
    assert config["model"]["source"] == "timm-legacy" and config["model"]["name"] == "se_resnet18"
    assert main(["train", "--pretrained", "se_resnet20", "--data", "synthetic", "--output", str(home / "r2")]) == 2
    assert "no released weights are known for se_resnet20" in capsys.readouterr().err
