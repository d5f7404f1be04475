"""add_se(init="identity"): SE added to a trained network leaves its function unchanged (to float rounding),
and the new blocks still learn."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import senet
from senet.interop.sources import recognise

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from interop.test_retrofit import TorchvisionStyleResNet, _plain_cnn, _randomise  # noqa: E402
from peer_fixtures import PEERS, peer_input, peer_state_dict, read_fixture, relative_difference  # noqa: E402


def trained(name: str) -> nn.Module:
    """torchvision's network with the peer fixture's weights (BN statistics spread as in a trained one)."""
    fixture = read_fixture(next(p for p in PEERS if p.library == "torchvision" and p.architecture == name))
    found = recognise(peer_state_dict(fixture["keys"]), source="torchvision")
    model = senet.create_model(found.model_name, **found.model_kwargs)
    model.load_state_dict(found.state_dict)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d"])
def test_identity_init_keeps_the_logits(name: str) -> None:
    model = trained(name)
    x = peer_input(64)
    with torch.no_grad():
        before = model(x)
        default = senet.add_se(copy.deepcopy(model))(x)
        after = senet.add_se(model, init="identity")(x)
    assert model.se_report.blocks == 8 if name == "resnet18" else 16
    assert relative_difference(after, before) < 1e-6  # float rounding (measured: ~3e-7 of max |logit|)
    assert relative_difference(default, before) > 0.05  # He init: every gate near 1/2 changes the function


@pytest.mark.parametrize("build", [lambda: _randomise(TorchvisionStyleResNet()), lambda: _randomise(_plain_cnn())],
                         ids=["fx-unit", "plain-cnn"])
def test_identity_init_on_other_networks(build) -> None:
    model = build()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        after = senet.add_se(model, init="identity", reduction=4)(x)
    torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-6)


def test_identity_init_still_learns() -> None:
    """fc2 starts at zero but its gradient is the bottleneck's output times the gate's: not zero. After one
    step fc2 is non-zero, so fc1 gets gradients too."""
    model = senet.add_se(trained("resnet18"), init="identity").train()
    x, y = peer_input(64), torch.tensor([1, 2])
    blocks = [m for m in model.modules() if isinstance(m, senet.SqueezeExcitation)]
    assert all(torch.count_nonzero(b.fc2.weight) == 0 for b in blocks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model(x), y).backward()
    assert all(b.fc2.weight.grad.abs().max() > 0 for b in blocks)
    assert all(b.fc1.weight.grad is None or b.fc1.weight.grad.abs().max() == 0 for b in blocks)
    optimizer.step()
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    assert all(b.fc1.weight.grad.abs().max() > 0 for b in blocks)


def test_identity_init_hard_sigmoid_and_the_3x3_position() -> None:
    model = trained("resnet18")
    x = peer_input(64)
    with torch.no_grad():
        before = model(x)
        after = senet.add_se(model, init="identity", gate="hard_sigmoid", position="3x3")(x)
    assert relative_difference(after, before) < 1e-6


@pytest.mark.parametrize("kwargs,message", [
    ({"gate": "tanh"}, r"gate\(0\) = 1/2, which Tanh is not"),
    ({"position": "pre"}, "no layer it can rescale"),
    ({"position": "identity"}, "no layer it can rescale"),
    ({"init": "ones"}, "unknown init 'ones'"),
])
def test_where_identity_is_impossible_one_clear_error(kwargs: dict, message: str) -> None:
    model = trained("resnet18")
    x = peer_input(64)
    with torch.no_grad():
        before = model(x)
    with pytest.raises(senet.ConfigError, match=message) as error:
        senet.add_se(model, **({"init": "identity"} | kwargs))
    assert "\n" not in str(error.value)
    assert not any(isinstance(m, senet.SqueezeExcitation) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), before)  # left as it came
