"""The zoo beyond ResNet (issue 5): fidelity to the paper's Tables 2-3 and the published architectures,
where SE sits in each family, the Inception-v3 auxiliary head, and SE-ResNets over 1-D and 3-D inputs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from senet.analysis import complexity
from senet.cli import main
from senet.errors import ConfigError
from senet.layers import ShapeError, SqueezeExcitation
from senet.models import (
    create_model,
    is_se_model,
    list_models,
    model_family,
    plain_twin,
)
from senet.models.inception import InceptionOutputs, ReductionPool
from senet.models.inception_resnet import InceptionResNetUnit
from senet.models.shufflenet import ShuffleUnit, channel_shuffle

FAMILIES = ("vgg", "inception", "inception_resnet", "mobilenet", "shufflenet", "resnet_nd")
NEW_MODELS = [name for family in FAMILIES for name in list_models(family=family)]
NEW_SE_MODELS = [name for name in NEW_MODELS if is_se_model(name)]


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def se_modules(model: nn.Module) -> list[SqueezeExcitation]:
    return [m for m in model.modules() if isinstance(m, SqueezeExcitation)]


def test_every_family_is_registered_with_twins() -> None:
    expected = {
        "vgg16_bn", "se_vgg16_bn", "bn_inception", "se_bn_inception", "inception_v3", "se_inception_v3",
        "inception_resnet_v2", "se_inception_resnet_v2", "mobilenet_v1", "se_mobilenet_v1",
        "shufflenet_v1_g3", "se_shufflenet_v1_g3", "mobilenet_v3_large", "mobilenet_v3_large_plain",
        "mobilenet_v3_small", "mobilenet_v3_small_plain",
    } | {f"{se}resnet{d}_{n}d" for se in ("", "se_") for d in (18, 34, 50) for n in (1, 3)}
    assert expected <= set(NEW_MODELS)
    for name in NEW_SE_MODELS:
        assert plain_twin(name) in NEW_MODELS and not is_se_model(plain_twin(name))
        assert model_family(plain_twin(name)) == model_family(name)


# ---------------------------------------------------------------------------------------------------
# Fidelity: paper-facts.md §3 and §8. params: (expected, absolute tolerance); MACs: (expected, relative).

FIDELITY = [
    # model, kwargs, params, param tol, GMACs, MAC rel tol
    ("vgg16_bn", {}, 138_365_992, 0, 15.47, 0.01),
    ("se_vgg16_bn", {}, None, 0, 15.48, 0.01),
    ("bn_inception", {}, None, 0, 2.03, 0.02),
    ("se_bn_inception", {}, None, 0, 2.04, 0.02),
    ("inception_v3", {"aux_logits": True}, 27_161_264, 0, 5.713, 0.001),
    ("inception_v3", {}, 23_834_568, 0, 5.713, 0.001),
    ("inception_resnet_v2", {}, 55_843_464, 0, 13.156, 0.001),  # the reference port; paper 11.75 (README)
    ("mobilenet_v1", {}, 4_200_000, 150_000, 0.569, 0.03),
    ("se_mobilenet_v1", {}, 4_700_000, 150_000, 0.572, 0.03),
    ("shufflenet_v1_g3", {}, 1_800_000, 150_000, 0.140, 0.03),
    ("se_shufflenet_v1_g3", {}, 2_400_000, 150_000, 0.142, 0.03),
    ("mobilenet_v3_large", {}, 5_483_032, 0, 0.217, 0.01),
    ("mobilenet_v3_small", {}, 2_542_856, 0, 0.057, 0.01),
]


@pytest.mark.parametrize("name, kwargs, params, param_tol, gmacs, mac_tol", FIDELITY)
def test_complexity_matches_the_paper(name: str, kwargs: dict, params, param_tol: int, gmacs: float,
                                      mac_tol: float) -> None:
    stats = complexity(meta_model(name, **kwargs))
    if params is not None:
        assert abs(stats.params - params) <= param_tol, f"{name}: {stats.params:,d} params"
    assert stats.gmacs == pytest.approx(gmacs, rel=mac_tol), f"{name}: {stats.gmacs:.4f} GMACs"


def test_default_input_sizes() -> None:
    assert meta_model("inception_v3").default_input_size == (3, 299, 299)
    assert meta_model("inception_resnet_v2").default_input_size == (3, 299, 299)
    assert meta_model("se_vgg16_bn").default_input_size == (3, 224, 224)
    assert meta_model("se_resnet18_1d").default_input_size == (1, 4096)
    assert meta_model("se_resnet18_1d", in_chans=12).default_input_size == (12, 4096)
    assert meta_model("se_resnet50_3d").default_input_size == (3, 16, 112, 112)


# ---------------------------------------------------------------------------------------------------
# Where SE sits


SE_COUNTS = {
    "se_vgg16_bn": 13, "se_bn_inception": 10, "se_inception_v3": 11, "se_inception_resnet_v2": 40,
    "se_mobilenet_v1": 13, "se_shufflenet_v1_g3": 16, "mobilenet_v3_large": 8, "mobilenet_v3_small": 9,
    "se_resnet18_1d": 8, "se_resnet34_1d": 16, "se_resnet50_1d": 16,
    "se_resnet18_3d": 8, "se_resnet34_3d": 16, "se_resnet50_3d": 16,
}


@pytest.mark.parametrize("name", NEW_SE_MODELS)
def test_se_blocks_per_model_and_the_plain_twin_is_the_rest(name: str) -> None:
    model, twin = meta_model(name), meta_model(plain_twin(name))
    assert len(se_modules(model)) == SE_COUNTS[name]
    assert se_modules(twin) == []
    # The SE network is its plain twin plus SE blocks: every other parameter has the same name and shape.
    se_names = [n for n, m in model.named_modules() if isinstance(m, SqueezeExcitation)]
    rest = {n: p.shape for n, p in model.named_parameters() if not any(n.startswith(s + ".") for s in se_names)}
    assert rest == {n: p.shape for n, p in twin.named_parameters()}


def test_inception_se_sits_on_each_concatenated_module_output() -> None:
    widths = [m.channels for m in se_modules(meta_model("se_bn_inception"))]
    assert widths == [256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024]
    widths = [m.channels for m in se_modules(meta_model("se_inception_v3"))]
    assert widths == [256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048]
    assert all(m.hidden_channels == m.channels // 16 for m in se_modules(meta_model("se_inception_v3")))


def test_inception_resnet_se_is_on_the_branch_before_the_scaled_addition() -> None:
    widths = [m.channels for m in se_modules(meta_model("se_inception_resnet_v2"))]
    assert widths == [320] * 10 + [1088] * 20 + [2080] * 10
    model = create_model("se_inception_resnet_v2").eval()
    unit = model.repeat[0]
    assert isinstance(unit, InceptionResNetUnit) and unit.scale == pytest.approx(0.17)
    x = torch.randn(2, 320, 9, 9)
    with torch.no_grad():
        branch = unit.up(unit.mixed(x))
        expected = torch.relu(x + 0.17 * branch * unit.se.excitation(branch))
        torch.testing.assert_close(unit(x), expected)
    assert isinstance(model.repeat_2[-1].act, nn.Identity) and model.repeat_2[-1].scale == 1.0


@pytest.mark.parametrize("stride", [1, 2])
def test_shufflenet_se_is_on_the_branch_before_the_merge(stride: int) -> None:
    in_channels = 240 if stride == 1 else 24
    unit = ShuffleUnit(in_channels, 240, groups=3, stride=stride, group_first=stride == 1,
                       se=meta_model("se_shufflenet_v1_g3").se_config).eval()
    assert unit.se.channels == (240 if stride == 1 else 216)
    x = torch.rand(2, in_channels, 8, 8)
    with torch.no_grad():
        branch = unit.conv1(x)
        branch = channel_shuffle(branch, 3) if stride == 1 else branch
        branch = unit.se(unit.conv2(unit.dwconv(branch)))
        merged = x + branch if stride == 1 else torch.cat([F.avg_pool2d(x, 3, 2, 1), branch], 1)
        torch.testing.assert_close(unit(x), torch.relu(merged))


def test_channel_shuffle_interleaves_groups() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_mobilenet_se_placement_and_widths() -> None:
    model = meta_model("se_mobilenet_v1")
    layers = [m for m in model.modules() if type(m).__name__ == "DepthwiseSeparable"]
    assert len(layers) == 13
    assert all(list(dict(layer.named_children())) == ["dw", "pw", "se"] for layer in layers)
    assert [layer.se.channels for layer in layers] == [64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]
    # MobileNetV3: r = 4 of the expanded width rounded to a multiple of 8, hard-sigmoid gate.
    large = se_modules(meta_model("mobilenet_v3_large"))
    assert [(m.channels, m.hidden_channels) for m in large] == [
        (72, 24), (120, 32), (120, 32), (480, 120), (672, 168), (672, 168), (960, 240), (960, 240)
    ]
    assert all(isinstance(m.gate, nn.Hardsigmoid) for m in large)
    small = se_modules(meta_model("mobilenet_v3_small"))
    assert [(m.channels, m.hidden_channels) for m in small][:2] == [(16, 8), (96, 24)]


def test_vgg_se_follows_every_conv() -> None:
    model = meta_model("se_vgg16_bn")
    for stage in range(1, 6):
        names = [n for n, _ in getattr(model, f"conv{stage}").named_children()]
        convs = [n for n in names if n.startswith("conv")]
        assert names == [x for c in convs for x in (c, c.replace("conv", "se"))] + ["pool"]


@pytest.mark.parametrize("name, stages, count", [
    ("se_vgg16_bn", (5,), 3), ("se_bn_inception", (3,), 3), ("se_inception_v3", (7,), 3),
    ("se_inception_resnet_v2", (6,), 20), ("se_mobilenet_v1", (4,), 6), ("se_shufflenet_v1_g3", (2,), 4),
    ("mobilenet_v3_large", (5,), 3), ("se_resnet50_3d", (5,), 3),
])
def test_se_stages(name: str, stages: tuple[int, ...], count: int) -> None:
    assert len(se_modules(meta_model(name, se_stages=stages))) == count


@pytest.mark.parametrize("name, kwargs", [
    ("se_vgg16_bn", {"se_position": "pre"}),
    ("se_inception_resnet_v2", {"se_position": "identity"}),
    ("mobilenet_v3_large", {"se_position": "3x3"}),
    ("se_shufflenet_v1_g3", {"se_stages": (5,)}),
    ("se_bn_inception", {"se_stages": ()}),
    ("mobilenet_v3_large_plain", {"reduction": 8}),
    ("vgg16_bn", {"gate": "tanh"}),
    ("inception_v3", {"aux_logit": True}),
])
def test_unsupported_options_are_config_errors(name: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        meta_model(name, **kwargs)


def test_se_keywords_reach_the_blocks() -> None:
    blocks = se_modules(meta_model("se_shufflenet_v1_g3", reduction=8, gate="hard_sigmoid", se_bias=False))
    assert all(m.hidden_channels == m.channels // 8 and m.fc1.bias is None for m in blocks)
    assert all(isinstance(m.gate, nn.Hardsigmoid) for m in blocks)
    blocks = se_modules(meta_model("mobilenet_v3_small", gate="sigmoid"))
    assert all(isinstance(m.gate, nn.Sigmoid) for m in blocks)


# ---------------------------------------------------------------------------------------------------
# Any input size


@pytest.mark.parametrize("name", [n for n in NEW_MODELS if "_1d" not in n and "_3d" not in n])
@pytest.mark.parametrize("side", [97, 112])  # 112: odd 7x7 maps at BN-Inception's reduction 4e
def test_any_input_size(name: str, side: int) -> None:
    model = meta_model(name, num_classes=7)
    side = max(side, getattr(model, "min_input_size", 0))
    assert model(torch.empty(2, 3, side, side + 6, device="meta")).shape == (2, 7)


def test_reduction_pool_is_the_release_pool_at_even_sizes() -> None:
    x = torch.randn(2, 4, 14, 14)
    torch.testing.assert_close(ReductionPool()(x), F.max_pool2d(x, 3, 2, ceil_mode=True))
    assert ReductionPool()(torch.randn(1, 1, 13, 13)).shape[-1] == 7  # as the 3x3/2 conv beside it


def test_too_small_inputs_are_shape_errors() -> None:
    model = create_model("inception_v3", num_classes=3)
    with pytest.raises(ShapeError, match="at least 75x75"):
        model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ShapeError):
        create_model("se_inception_resnet_v2")(torch.zeros(1, 3, 74, 80))


# ---------------------------------------------------------------------------------------------------
# Inception-v3 auxiliary classifier


def test_inception_v3_aux_logits_in_training_mode() -> None:
    model = create_model("se_inception_v3", num_classes=5, aux_logits=True).train()
    out = model(torch.randn(2, 3, 75, 75))
    assert isinstance(out, InceptionOutputs)
    assert out.logits.shape == out.aux_logits.shape == (2, 5)
    (out.logits.sum() + 0.4 * out.aux_logits.sum()).backward()
    assert all(p.grad is not None for p in model.aux.parameters())
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 75, 75)).shape == (2, 5)
    model.reset_classifier(11)
    assert model.fc.out_features == 11 and model.aux.fc.out_features == 11


def test_inception_v3_aux_head_at_299_uses_the_papers_pooling() -> None:
    model = meta_model("inception_v3", aux_logits=True).train()
    seen = []
    model.aux.conv0.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[2:])))
    out = model(torch.empty(2, 3, 299, 299, device="meta"))
    assert seen == [(5, 5)] and out.aux_logits.shape == (2, 1000)  # 17x17 -> 5x5/3 pool -> 5x5


# ---------------------------------------------------------------------------------------------------
# SE beyond 2-D images


@pytest.mark.parametrize("name, size", [
    ("se_resnet18_1d", (1, 300)), ("se_resnet50_1d", (2, 128)), ("resnet34_1d", (1, 100)),
    ("se_resnet18_3d", (3, 8, 32, 32)), ("se_resnet50_3d", (1, 4, 32, 40)), ("resnet18_3d", (3, 8, 32, 32)),
])
def test_nd_forward_backward(name: str, size: tuple[int, ...]) -> None:
    model = create_model(name, num_classes=4, in_chans=size[0])
    out = model(torch.randn((2,) + size))
    assert out.shape == (2, 4)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    conv = nn.Conv1d if name.endswith("_1d") else nn.Conv3d
    assert all(isinstance(m.fc1, conv) for m in se_modules(model))


@pytest.mark.parametrize("position", ["pre", "post", "identity", "3x3"])
def test_nd_resnets_take_the_se_positions(position: str) -> None:
    model = create_model("se_resnet50_1d", num_classes=3, se_position=position)
    assert model(torch.randn(2, 1, 64)).shape == (2, 3)


def test_nd_twins_differ_by_the_se_parameters() -> None:
    for dims in (1, 3):
        stats = complexity(meta_model(f"se_resnet50_{dims}d"))
        plain = complexity(meta_model(f"resnet50_{dims}d"))
        assert stats.params - plain.params == stats.se_params > 0
        # Same SE widths as the 2-D SE-ResNet-50 (28,088,024 - 25,557,032 = 2,530,992 SE parameters).
        assert stats.se_params == 2_530_992


def test_cli_lists_the_new_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "mobilenet_v3_*", "--json"]) == 0
    rows = {row["model"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["mobilenet_v3_large"]["plain_twin"] == "mobilenet_v3_large_plain"
    assert rows["mobilenet_v3_large"]["params"] == 5_483_032
    assert main(["info", "se_inception_resnet_v2", "--se-position", "pre"]) == 2
    assert "one SE placement" in capsys.readouterr().err
