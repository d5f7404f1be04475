"""The model options other ports' checkpoints need: deep stems, ResNet-D shortcuts, the legacy ReLU before
SE, MobileNetV3's BN epsilon and momentum, and the registry entries they come with."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import senet
from senet.errors import ConfigError
from senet.layers import SEConfig
from senet.models.resnet import BasicBlock, Bottleneck, ResNet


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(
    ("name", "widths"),
    [("se_resnext26d_32x4d", [32, 32, 64]), ("se_resnext26t_32x4d", [24, 32, 64]), ("senet154", [64, 64, 128]),
     ("se_resnext26_32x4d", [64])],
)
def test_stem_widths(name: str, widths: list[int]) -> None:
    with torch.device("meta"):
        model = senet.create_model(name)
    convs = _convs(model.stem)
    assert [c.out_channels for c in convs] == widths
    assert [c.stride[0] for c in convs] == [2] + [1] * (len(widths) - 1)


def test_unknown_stem_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown stem_type 'deeep'.*did you mean 'deep'"):
        ResNet(Bottleneck, (1, 1, 1, 1), stem_type="deeep")


def test_resnet_d_shortcut_pools_before_a_stride_1_projection() -> None:
    model = ResNet(BasicBlock, (1, 1, 1, 1), stem_type="deep", avg_pool_shortcut=True).eval()
    first, later = model.layer1[0].downsample, model.layer2[0].downsample
    assert first is None  # 64 -> 64 at stride 1: an identity shortcut
    with torch.device("meta"):
        bottlenecks = ResNet(Bottleneck, (1, 1, 1, 1), avg_pool_shortcut=True)
    assert isinstance(bottlenecks.layer1[0].downsample[0], nn.Identity)  # 64 -> 256 at stride 1: no pool
    later = model.layer2[0].downsample
    assert isinstance(later[0], nn.AvgPool2d)
    assert later[1].stride == (1, 1) and later[1].kernel_size == (1, 1)
    assert later[0].ceil_mode and not later[0].count_include_pad
    x = torch.randn(1, 64, 15, 15)  # odd: the last window is partial and averages only what it covers
    expected = later[2](later[1](nn.functional.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)))
    torch.testing.assert_close(later(x), expected)
    assert {"layer2.0.downsample.1.weight", "layer2.0.downsample.2.weight"} <= set(dict(model.named_parameters()))


def test_relu_before_se_puts_a_relu_between_bn2_and_se() -> None:
    model = ResNet(BasicBlock, (1, 1, 1, 1), se=SEConfig(), relu_before_se=True).eval()
    block = model.layer1[0]
    seen = {}
    block.se.register_forward_pre_hook(lambda m, args: seen.__setitem__("se_input", args[0].clone()))
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        out = block(x)  # the fused merge
        hidden = block.act1(block.bn1(block.conv1(x)))
        expected_input = torch.relu(block.bn2(block.conv2(hidden)))
        expected = torch.relu(expected_input * block.se.excitation(expected_input) + x)
        model.set_se_impl("naive")  # the naive SE is called as a module, so the hook sees its input
        naive = block(x)
    torch.testing.assert_close(seen["se_input"], expected_input)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(naive, expected)
    plain = ResNet(BasicBlock, (1, 1, 1, 1), se=SEConfig()).eval()
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(torch.randn(1, 3, 64, 64)), model(torch.randn(1, 3, 64, 64)))


@pytest.mark.parametrize(("name", "kwargs"), [("se_resnet50", {}), ("resnet18", {}),
                                              ("se_resnet18", {"se_position": "pre"})])
def test_relu_before_se_needs_an_se_basic_block(name: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="relu_before_se applies to SE basic blocks"):
        senet.create_model(name, relu_before_se=True, **kwargs)


def test_relu_before_se_skips_stages_without_se() -> None:
    with torch.device("meta"):
        model = senet.create_model("se_resnet18", relu_before_se=True, se_stages=(5,))
    assert not model.layer1[0].relu_before_se and model.layer4[0].relu_before_se


def test_mobilenet_v3_bn_options_reach_every_batchnorm() -> None:
    model = senet.create_model("mobilenet_v3_small", bn_eps=1e-3, bn_momentum=0.01)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)
    default = [m for m in senet.create_model("mobilenet_v3_small").modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in default)


@pytest.mark.parametrize(
    ("name", "params"),
    [("se_resnext26d_32x4d", 16_809_512), ("se_resnext26t_32x4d", 16_806_976), ("resnext101_32x8d", 88_791_336),
     ("se_resnext26_32x4d", 16_790_280)],
)
def test_new_entries_have_the_peers_parameter_counts(name: str, params: int) -> None:
    """timm's seresnext26d/26t_32x4d, legacy_seresnext26_32x4d and torchvision's resnext101_32x8d."""
    with torch.device("meta"):
        model = senet.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
