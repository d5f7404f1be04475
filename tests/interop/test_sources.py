"""senet.interop.sources: every peer checkpoint maps onto a senet model with the peer's own logits.

The logits come from the real peer (timm, torchvision, or senet.pytorch rebuilt on torchvision) through
scripts/make_peer_fixtures.py; the weights are drawn again here from the fixture's seed (peer_fixtures).
"""

from __future__ import annotations

import re

import pytest
import torch
from peer_fixtures import PEERS, Peer, peer_input, peer_state_dict, read_fixture, relative_difference

import senet
from senet.errors import SenetError
from senet.interop.sources import (
    SOURCES,
    Recognised,
    StateDictMismatchError,
    UnrecognisedCheckpointError,
    recognise,
)

TOLERANCE = 1e-5  # max |ours - peer| / max |peer| (fp32, eval)


def _param(peer: Peer):
    marks = [pytest.mark.slow] if peer.slow else []
    return pytest.param(peer, id=f"{peer.source}:{peer.architecture}", marks=marks)


def _peer(source: str, architecture: str) -> Peer:
    return next(p for p in PEERS if p.source == source and p.architecture == architecture)


def _weights(peer: Peer) -> tuple[dict, dict[str, torch.Tensor]]:
    fixture = read_fixture(peer)
    return fixture, peer_state_dict(fixture["keys"], fixture["seed"])


def _logits(found: Recognised, side: int, **override) -> torch.Tensor:
    with torch.device("meta"):  # no initialisation: the weights are assigned
        model = senet.create_model(found.model_name, **(found.model_kwargs | override))
    model.load_state_dict(found.state_dict, strict=True, assign=True)
    with torch.no_grad():
        return model.eval()(peer_input(side))


def _is_plain(state_dict: dict) -> bool:
    return not any(re.search(r"\.se[._]", k) for k in state_dict)


def test_every_source_has_a_ci_peer() -> None:
    assert {p.source for p in PEERS if not p.slow} == set(SOURCES)


@pytest.mark.parametrize("peer", [_param(p) for p in PEERS])
def test_peer_logits(peer: Peer) -> None:
    fixture, weights = _weights(peer)
    found = recognise(weights)
    if found.assumed:  # only plain ResNets look alike in timm and torchvision: the same network
        assert _is_plain(weights) and peer.source in ("timm", "torchvision") and found.source == "torchvision"
        assert recognise(weights, source=peer.source, model=found.model_name).model_kwargs == found.model_kwargs
        found = recognise(weights, source=peer.source)
    assert (found.source, found.architecture) == (peer.source, peer.architecture)
    difference = relative_difference(_logits(found, peer.side), fixture["logits"])
    assert difference <= TOLERANCE, f"{found.describe()}: relative logit difference {difference:.2e}"
    for key, value in fixture["preprocessing"].items():
        assert found.preprocessing[key] == pytest.approx(tuple(value) if isinstance(value, list) else value), key


@pytest.mark.parametrize(
    ("source", "architecture", "override"),
    [
        ("torchvision", "mobilenet_v3_small", {"bn_eps": 1e-5}),  # torchvision's BN epsilon is 1e-3
        ("timm-legacy", "legacy_seresnet18", {"relu_before_se": False}),  # the legacy ReLU before SE
        ("timm-legacy", "legacy_seresnext26_32x4d", {"layout": "torchvision"}),  # the release's ceil-mode pool
        ("senet.pytorch", "se_resnet20", {"se_min_channels": 4}),  # its 1-unit SE bottleneck
    ],
)
def test_the_fixtures_tell_a_wrong_network_apart(source: str, architecture: str, override: dict) -> None:
    """Each option the mapping sets matters: without it the logits are far from the peer's."""
    peer = _peer(source, architecture)
    fixture, weights = _weights(peer)
    found = recognise(weights)
    if "se_min_channels" in override:
        with pytest.raises(RuntimeError, match="size mismatch"):
            _logits(found, peer.side, **override)
        return
    assert relative_difference(_logits(found, peer.side, **override), fixture["logits"]) > 1e-3


def test_describe_and_contract() -> None:
    _, weights = _weights(_peer("timm-legacy", "legacy_seresnet50"))
    found = recognise(weights)
    assert found.describe() == "timm legacy_seresnet50 -> se_resnet50 (layout=paper), 384 tensors"
    assert (found.model_name, found.model_kwargs) == ("se_resnet50", {"layout": "paper"})
    assert list(found.state_dict) == list(senet.create_model("se_resnet50").state_dict())
    assert found.preprocessing["crop_pct"] == 0.875 and found.preprocessing["interpolation"] == "bilinear"


def test_plain_resnets_load_without_a_source() -> None:
    """The keys fit timm's and torchvision's ResNets alike: the network is the same, torchvision's
    preprocessing is assumed (timm's where the file was found in timm's cache) and the note says so."""
    _, weights = _weights(_peer("torchvision", "resnet18"))
    found = recognise(weights)
    assert (found.source, found.model_name, found.model_kwargs) == ("torchvision", "resnet18", {"layout": "torchvision"})
    assert "assumed torchvision's preprocessing" in found.assumed and "--source timm" in found.assumed
    assert "\n" not in found.assumed
    timm = recognise(weights, prefer="timm")
    assert timm.source == "timm" and timm.preprocessing["interpolation"] == "bicubic"
    assert all(torch.equal(timm.state_dict[k], v) for k, v in found.state_dict.items())
    assert recognise(weights, source="torchvision").assumed == ""
    assert recognise(weights, source="torchvision").preprocessing["interpolation"] == "bilinear"
    hub = recognise(weights, config={"architecture": "resnet18", "pretrained_cfg": {"crop_pct": 0.9}})
    assert (hub.source, hub.model_name, hub.preprocessing["crop_pct"]) == ("timm", "resnet18", 0.9)


def test_hub_config_architecture_is_checked() -> None:
    _, weights = _weights(_peer("timm", "seresnet18"))
    with pytest.raises(StateDictMismatchError, match="'seresnet34' but the weights are timm's 'seresnet18'"):
        recognise(weights, config={"architecture": "seresnet34.untrained"})
    assert recognise(weights, config={"architecture": "seresnet18.untrained"}).architecture == "seresnet18"


def test_unknown_source_suggests_the_closest() -> None:
    with pytest.raises(SenetError, match=r"unknown source 'timn' \(did you mean 'timm'.*choose one of: auto, timm-legacy"):
        recognise({"fc.weight": torch.zeros(2, 2)}, source="timn")


def test_unrecognised_keys_list_the_patterns_and_the_sources() -> None:
    state_dict = {"encoder.block3.attn.qkv.weight": torch.zeros(4, 4), "head.weight": torch.zeros(2, 4)}
    with pytest.raises(UnrecognisedCheckpointError) as error:
        recognise(state_dict)
    message = str(error.value)
    assert "\n" not in message
    assert "encoder.block{n}.attn.qkv" in message and "head" in message
    assert all(source in message for source in SOURCES)


def test_a_peer_architecture_senet_lacks_is_unrecognised() -> None:
    """timm's resnet18d (deep stem, average-pool shortcuts, basic blocks) has no senet twin."""
    _, weights = _weights(_peer("timm", "resnet18"))
    deep = {k: v for k, v in weights.items() if not k.startswith("conv1.")}
    deep |= {"conv1.0.weight": torch.zeros(32, 3, 3, 3), "conv1.3.weight": torch.zeros(32, 32, 3, 3),
             "conv1.6.weight": torch.zeros(64, 32, 3, 3)}
    with pytest.raises(UnrecognisedCheckpointError, match="no registered senet model has the timm keys"):
        recognise(deep)


def test_shape_mismatch_names_the_keys_and_both_shapes() -> None:
    _, weights = _weights(_peer("timm-legacy", "legacy_seresnet18"))
    weights["layer2.1.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    with pytest.raises(StateDictMismatchError) as error:
        recognise(weights)
    message = str(error.value)
    assert "\n" not in message
    assert "layer2.1.conv2.weight has shape (128, 128, 1, 1) in the state dict" in message
    assert "(128, 128, 3, 3) in the model" in message


def test_a_forced_model_that_does_not_fit_says_what_differs() -> None:
    _, weights = _weights(_peer("timm-legacy", "legacy_seresnet18"))
    with pytest.raises(StateDictMismatchError, match=r"does not fit se_resnet34 .*lacks \d+ tensors the model has"):
        recognise(weights, model="se_resnet34")
    assert recognise(weights, model="se_resnet18").model_kwargs["relu_before_se"] is True


def test_se_widths_come_from_the_shapes() -> None:
    """A release-format SE-ResNet-18 trained with reduction 8, 5 classes and 1 input channel."""
    trained = senet.create_model("se_resnet18", reduction=8, num_classes=5, in_chans=1).state_dict()
    rules = [(r"^stem\.", "layer0."), (r"\.se\.", ".se_module."), (r"^fc\.", "last_linear.")]
    legacy = {}
    for key, value in trained.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        legacy[key] = value
    found = recognise(legacy)
    assert found.model_kwargs == {"layout": "paper", "relu_before_se": True, "reduction": 8, "num_classes": 5,
                                  "in_chans": 1}
    model = senet.create_model(found.model_name, **found.model_kwargs)
    model.load_state_dict(found.state_dict, strict=True)


def test_linear_se_weights_become_1x1_convolutions() -> None:
    _, weights = _weights(_peer("senet.pytorch", "se_resnet20"))
    found = recognise(weights)
    assert weights["layer1.0.se.fc.0.weight"].shape == (1, 16)
    assert found.state_dict["layer1.0.se.fc1.weight"].shape == (1, 16, 1, 1)
    assert "layer1.0.se.fc1.bias" not in found.state_dict


@pytest.mark.peer
@pytest.mark.parametrize(
    "peer",
    [_param(p) for p in PEERS if p.architecture in
     ("legacy_seresnet18", "seresnext26t_32x4d", "mobilenetv3_small_100", "mobilenet_v3_small", "se_resnet20")],
)
def test_live_peer(peer: Peer) -> None:
    """Against the live library where it imports (the peer environment): its logits on the fixture's
    weights match both senet's and the fixture's (so the fixtures are current)."""
    pytest.importorskip("timm" if peer.library == "timm" else "torchvision")
    from peer_fixtures import build_peer

    fixture, weights = _weights(peer)
    model = build_peer(peer)
    model.load_state_dict(weights, strict=True)
    with torch.no_grad():
        theirs = model(peer_input(peer.side))
    assert relative_difference(theirs, fixture["logits"]) <= TOLERANCE
    found = recognise(weights, source=peer.source)
    assert relative_difference(_logits(found, peer.side), theirs) <= TOLERANCE


def test_plain_resnet_file_loads_with_a_note(tmp_path, capsys) -> None:
    from senet.cli import main
    from senet.interop.sources import AssumedSourceWarning

    _, weights = _weights(_peer("timm", "resnet18"))
    torch.save(weights, tmp_path / "resnet18.pth")
    with pytest.warns(AssumedSourceWarning, match="assumed torchvision's preprocessing"):
        model = senet.load_model(tmp_path / "resnet18.pth")
    assert model.pretrained_cfg["source"] == "torchvision" and model.pretrained_cfg["crop_pct"] == 224 / 256
    assert senet.load_model(tmp_path / "resnet18.pth", source="timm").pretrained_cfg["interpolation"] == "bicubic"
    assert main(["convert", str(tmp_path / "resnet18.pth"), str(tmp_path / "r.safetensors")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("senet: note: ") and err.count("\n") == 1 and "--source timm" in err
