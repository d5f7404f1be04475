"""The SE block family (paper Sec. 3, Tables 11, 12, 16)."""

import pytest
import torch
import torch.nn.functional as F

from senet import ConfigError, SEConfig, ShapeError, SqueezeExcitation
from senet.layers import get_gate, make_divisible, se_hidden_channels


def reference_se(block: SqueezeExcitation, x: torch.Tensor) -> torch.Tensor:
    """Eq. 2-4 written out with the FC weights as matrices: x * sigmoid(W2 relu(W1 z + b1) + b2)."""
    z = x.mean(dim=tuple(range(2, x.dim())))
    w1 = block.fc1.weight.flatten(1)
    w2 = block.fc2.weight.flatten(1)
    s = torch.sigmoid(F.linear(torch.relu(F.linear(z, w1, block.fc1.bias)), w2, block.fc2.bias))
    return x * s.view(*s.shape, *([1] * (x.dim() - 2)))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_se_matches_the_paper_formula(dims: int) -> None:
    block = SqueezeExcitation(32, 4, dims=dims)
    x = torch.randn(2, 32, *([5] * dims))
    torch.testing.assert_close(block(x), reference_se(block, x))
    assert block.hidden_channels == 8
    assert block.fc1.weight.shape == (8, 32) + (1,) * dims


def test_excitation_returns_gate_values() -> None:
    block = SqueezeExcitation(16, 4)
    x = torch.randn(3, 16, 6, 6)
    s = block.excitation(x)
    assert s.shape == (3, 16, 1, 1)
    assert torch.all((s > 0) & (s < 1))
    torch.testing.assert_close(block(x), x * s)


def test_channels_last_input_gives_same_result_and_format() -> None:
    block = SqueezeExcitation(24, 4)
    x = torch.randn(2, 24, 7, 7)
    y = block(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(y, block(x))
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_squeeze_variants() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 6, 6)
    avg = SqueezeExcitation(16, 4, squeeze="avg")
    mx = SqueezeExcitation(16, 4, squeeze="max")
    mx.load_state_dict(avg.state_dict())
    assert not torch.allclose(avg(x), mx(x))
    # NoSqueeze (Table 16): no pooling, the FCs act at every position.
    none = SqueezeExcitation(16, 4, squeeze="none")
    none.load_state_dict(avg.state_dict())
    s = none.excitation(x)
    assert s.shape == x.shape
    per_position = torch.sigmoid(none.fc2(torch.relu(none.fc1(x[:, :, 2:3, 3:4]))))
    torch.testing.assert_close(s[:, :, 2:3, 3:4], per_position)


@pytest.mark.parametrize(
    "gate, fn",
    [
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("relu", torch.relu),
        ("hard_sigmoid", lambda t: F.relu6(t + 3) / 6),
    ],
)
def test_gates(gate: str, fn) -> None:
    t = torch.linspace(-5, 5, 101)
    torch.testing.assert_close(get_gate(gate)(t), fn(t))
    block = SqueezeExcitation(8, 2, gate=gate)
    x = torch.randn(2, 8, 3, 3)
    s = fn(block.fc2(torch.relu(block.fc1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(block(x), x * s)


def test_bias_norm_and_activation_options() -> None:
    plain = SqueezeExcitation(64, 16, bias=False)
    assert plain.fc1.bias is None and plain.fc2.bias is None
    assert sum(p.numel() for p in plain.parameters()) == 2 * 64 * 4  # (2 / r) C^2
    normed = SqueezeExcitation(64, 16, norm=True, act="hard_swish")
    assert isinstance(normed.bn, torch.nn.BatchNorm2d) and normed.bn.num_features == 4
    assert isinstance(normed.act, torch.nn.Hardswish)
    normed(torch.randn(2, 64, 4, 4)).sum().backward()


def test_hidden_width_rounding() -> None:
    assert se_hidden_channels(256, 16) == 16
    assert se_hidden_channels(100, 16) == 6  # floor, as the official release
    assert se_hidden_channels(16, 16) == 1
    assert se_hidden_channels(16, 16, min_channels=4) == 4
    # MobileNetV3: expanded width / 4 rounded to a multiple of 8, never dropping more than 10%.
    assert se_hidden_channels(72, 4, divisor=8) == 24
    assert se_hidden_channels(120, 4, divisor=8) == 32
    assert make_divisible(18, 8) == 24
    assert SqueezeExcitation(64, hidden_channels=5).hidden_channels == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reduction": 0.5}, "reduction must be >= 1"),
        ({"reduction": 64}, "reduction 64 is larger than the 32 channels"),
        ({"gate": "sigmod"}, "did you mean 'sigmoid'"),
        ({"squeeze": "mean"}, "unknown squeeze 'mean'"),
        ({"dims": 4}, "dims must be 1, 2 or 3"),
    ],
)
def test_invalid_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SqueezeExcitation(32, **kwargs)


def test_wrong_input_shape_names_both_numbers() -> None:
    block = SqueezeExcitation(64)
    with pytest.raises(ShapeError, match="expects 64 channels, got 32"):
        block(torch.randn(1, 32, 4, 4))
    with pytest.raises(ShapeError, match="4-D input"):
        block(torch.randn(1, 64, 4))


def test_se_config_validates_and_builds() -> None:
    with pytest.raises(ConfigError, match="se_position"):
        SEConfig(position="middle")
    config = SEConfig(reduction=8, gate="tanh", stages=[3, 4])
    assert config.stages == (3, 4)
    assert config.for_stage(2) is None and config.for_stage(3) is config
    block = config.build(64, dims=3)
    assert block.hidden_channels == 8 and block.dims == 3
