"""Registry, variant keywords and the error messages users see."""

from __future__ import annotations

import pytest
import torch

import senet
from senet.layers import SqueezeExcitation
from senet.models.resnet import Bottleneck

ISSUE_MODELS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x4d",
    "resnext101_64x4d", "senet154", "senet154_plain", "resnet20", "resnet32", "resnet44", "resnet56",
    "resnet110", "resnet164", "wrn16_8",
]  # fmt: skip


def test_every_model_of_the_foundation_is_registered_with_its_twin() -> None:
    names = senet.list_models()
    for name in ISSUE_MODELS:
        assert name in names
        if name != "senet154":
            assert f"se_{name}" in names or name == "senet154_plain"
    assert senet.plain_twin("senet154") == "senet154_plain"
    assert senet.se_twin("resnet50") == "se_resnet50"
    assert senet.list_models("se_resnext*") == [
        "se_resnext26_32x4d", "se_resnext26d_32x4d", "se_resnext26t_32x4d", "se_resnext50_32x4d",
        "se_resnext101_32x4d", "se_resnext101_32x8d", "se_resnext101_64x4d",
    ]  # fmt: skip
    assert all(senet.is_se_model(n) for n in senet.list_models(se=True))


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(senet.UnknownModelError, match="did you mean 'se_resnet50'"):
        senet.create_model("se_resnet_50")


def test_unknown_keyword_suggests_close_names() -> None:
    with pytest.raises(senet.ConfigError, match="unknown keyword 'reductio'.*did you mean 'reduction'"):
        senet.create_model("se_resnet50", reductio=8)
    with pytest.raises(senet.ConfigError, match="unknown keyword 'num_class'.*'num_classes'"):
        senet.create_model("resnet20", num_class=3)


def test_plain_model_rejects_se_keywords() -> None:
    with pytest.raises(senet.ConfigError, match="resnet50 has no SE blocks.*'se_resnet50'"):
        senet.create_model("resnet50", reduction=8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"se_position": "after"}, "unknown se_position 'after'"),
        ({"se_stages": (1, 2)}, "se_stages"),
        ({"se_stages": ()}, "se_stages"),
        ({"layout": "caffe"}, "unknown layout 'caffe'"),
        ({"gate": "softmax"}, "unknown gate"),
        ({"reduction": 0}, "reduction must be >= 1"),
    ],
)
def test_bad_variant_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(senet.ConfigError, match=message):
        senet.create_model("se_resnet18", **kwargs)


def test_cifar_narrow_stages_get_at_least_four_se_units() -> None:
    model = senet.create_model("se_resnet20")
    widths = {m.channels: m.hidden_channels for m in model.modules() if isinstance(m, SqueezeExcitation)}
    assert widths == {16: 4, 32: 4, 64: 4}
    literal = senet.create_model("se_resnet20", se_min_channels=1)
    assert {m.hidden_channels for m in literal.modules() if isinstance(m, SqueezeExcitation)} == {1, 2, 4}
    with pytest.raises(senet.ConfigError, match="se_stages"):
        senet.create_model("se_resnet20", se_stages=(5,))


def test_wrong_input_channels_names_both_numbers() -> None:
    model = senet.create_model("se_resnet18")
    with pytest.raises(senet.ShapeError, match="expects 3 input channels, got 1"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(senet.ShapeError, match="4-D batch"):
        model(torch.randn(3, 64, 64))


def test_se_stages_place_blocks_only_there() -> None:
    model = senet.create_model("se_resnet50", se_stages=(3, 5))
    per_layer = {
        name: sum(isinstance(m, SqueezeExcitation) for m in getattr(model, name).modules())
        for name in ("layer1", "layer2", "layer3", "layer4")
    }
    assert per_layer == {"layer1": 0, "layer2": 4, "layer3": 0, "layer4": 3}


def test_paper_layout_puts_the_stride_where_the_release_does() -> None:
    resnet = senet.create_model("se_resnet50")
    assert resnet.layer2[0].conv1.stride == (2, 2) and resnet.layer2[0].conv2.stride == (1, 1)
    assert resnet.stem.pool.padding == 0 and resnet.stem.pool.ceil_mode
    resnext = senet.create_model("se_resnext50_32x4d")
    assert resnext.layer2[0].conv2.stride == (2, 2) and resnext.layer2[0].conv2.groups == 32
    tv = senet.create_model("se_resnet50", layout="torchvision")
    assert tv.layer2[0].conv2.stride == (2, 2) and tv.stem.pool.padding == 1


def test_senet154_architecture() -> None:
    with torch.device("meta"):
        model = senet.create_model("senet154")
    assert [model.stem.conv1.out_channels, model.stem.conv2.out_channels, model.stem.conv3.out_channels] == [64, 64, 128]
    block = model.layer1[0]
    assert block.conv1.out_channels == 128 and block.conv2.out_channels == 256 and block.conv2.groups == 64
    assert model.layer2[0].downsample[0].kernel_size == (3, 3)
    assert model.layer1[0].downsample[0].kernel_size == (1, 1)


# Fig. 5 and Table 15: the five integration strategies, checked against the formula of each.
def _block(position: str) -> Bottleneck:
    torch.manual_seed(0)
    block = Bottleneck(64, 16, se=senet.SEConfig(reduction=4, position=position)).eval()
    for bn in (block.bn1, block.bn2, block.bn3):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return block


@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity", "3x3"])
def test_integration_strategies_follow_figure_5(position: str) -> None:
    block = _block(position)
    x = torch.randn(2, 64, 8, 8)
    se, relu = block.se, torch.relu

    def residual(inp: torch.Tensor, mid=lambda t: t) -> torch.Tensor:
        out = relu(block.bn1(block.conv1(inp)))
        out = mid(relu(block.bn2(block.conv2(out))))
        return block.bn3(block.conv3(out))

    expected = {
        "standard": lambda: relu(se(residual(x)) + x),
        "pre": lambda: relu(residual(se(x)) + x),
        "post": lambda: se(relu(residual(x) + x)),
        "identity": lambda: relu(residual(x) + se(x)),
        "3x3": lambda: relu(residual(x, se) + x),
    }[position]()
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
    assert se.channels == (16 if position == "3x3" else 64)


@pytest.mark.parametrize("change", [{"se_position": "pre"}, {"squeeze": "max"}, {"gate": "tanh"}, {"reduction": 8}])
def test_changing_a_variant_changes_the_output(change: dict) -> None:
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(0)
    base = senet.create_model("se_resnet18", num_classes=10).eval()
    torch.manual_seed(0)
    variant = senet.create_model("se_resnet18", num_classes=10, **change).eval()
    if set(change) <= {"squeeze", "gate"}:  # same shapes: share every weight, so only the variant differs
        variant.load_state_dict(base.state_dict())
    assert not torch.allclose(base(x), variant(x), atol=1e-6)


def test_list_models_answers_timm_patterns_with_timm_names() -> None:
    """A pattern that matches only timm's names of senet networks lists them (as `timm.list_models` does);
    one that matches senet's own names lists those; `aliases` says always or never."""
    timm_style = senet.list_models("seresnet*")
    assert timm_style and all(name.startswith("seresnet") for name in timm_style)
    assert all(senet.create_model(name).num_classes == 1000 for name in timm_style[:1])
    assert senet.list_models("legacy_seresnet50") == ["legacy_seresnet50"]
    assert "seresnet50" not in senet.list_models() and "seresnet50" in senet.list_models(aliases=True)
    assert senet.list_models("seresnet*", aliases=False) == []
    assert senet.list_models("no_such_net*") == []
