"""Stochastic depth (`drop_path_rate`, `senet.layers.drop`) and the Wide ResNet's dropout (`drop_rate`)."""

from __future__ import annotations

import copy

import pytest
import torch

import senet
from senet.errors import ConfigError
from senet.layers import SEConfig, set_se_impl
from senet.layers.drop import DropPath, drop_path_rates
from senet.models.resnet import BasicBlock, Bottleneck


def test_rates_increase_linearly_as_timm():
    assert drop_path_rates(0.1, 5) == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    model = senet.create_model("se_resnet50", drop_path_rate=0.2)
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    assert len(rates) == 15  # 16 units, the first at rate 0 (an Identity)
    assert rates[-1] == pytest.approx(0.2) and rates[0] == pytest.approx(0.2 / 15)


def test_drop_path_is_identity_in_eval():
    drop = DropPath(0.5).eval()
    x = torch.randn(8, 3, 4, 4)
    assert drop(x) is x
    torch.manual_seed(0)
    model = senet.create_model("se_resnet20", drop_path_rate=0.5).eval()
    plain = copy.deepcopy(model)
    for unit in plain.modules():
        if isinstance(getattr(unit, "drop_path", None), DropPath):
            unit.drop_path = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), plain(x))


def test_drop_path_is_per_sample_and_preserves_the_expected_value():
    drop = DropPath(0.25).train()
    torch.manual_seed(0)
    x = torch.ones(20000, 2, 1)
    out = drop(x)
    per_sample = out[:, 0, 0]
    assert per_sample.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (out[:, :, :] == per_sample[:, None, None]).all()  # one decision per sample
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)


def _unit_inputs(block, dims=2):
    torch.manual_seed(0)
    unit = block(8, 8 // block.expansion if block is Bottleneck else 8, se=SEConfig(reduction=4), dims=dims,
                 drop_path=0.5)
    unit = unit.double().train()
    return unit, torch.randn((6, 8) + (5,) * dims, dtype=torch.float64)


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_fused_and_naive_agree_with_drop_path(block, dims):
    """The fused merge folds the per-sample factor into s; the naive one multiplies the branch: the same
    outputs and gradients in float64 from the same RNG state."""
    unit, x = _unit_inputs(block, dims)
    results = []
    for impl in ("fused", "naive"):
        copy_ = set_se_impl(copy.deepcopy(unit), impl)
        inp = x.clone().requires_grad_()
        torch.manual_seed(1)
        out = copy_(inp)
        out.square().sum().backward()
        results.append((out, inp.grad, [p.grad for p in copy_.parameters()]))
    (out_f, gx_f, gp_f), (out_n, gx_n, gp_n) = results
    torch.testing.assert_close(out_f, out_n, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(gx_f, gx_n, atol=1e-10, rtol=1e-10)
    for got, want in zip(gp_f, gp_n):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_dropped_samples_are_their_shortcut():
    """A sample whose branch is dropped leaves the unit as act(shortcut)."""
    unit, x = _unit_inputs(BasicBlock)
    torch.manual_seed(1)
    keep = DropPath(0.5).train().sample_scale(x)
    torch.manual_seed(1)
    out = unit(x)
    dropped = keep == 0
    assert dropped.any() and (~dropped).any()
    torch.testing.assert_close(out[dropped], torch.relu(x[dropped]))


@pytest.mark.parametrize("name", ["se_resnet18", "resnet20", "se_wrn16_8", "mobilenet_v3_small",
                                  "se_shufflenet_v1_g3", "se_resnet18_1d"])
def test_families_take_drop_path_rate(name):
    model = senet.create_model(name, drop_path_rate=0.1, num_classes=3)
    assert any(isinstance(m, DropPath) for m in model.modules())
    size = model.default_input_size
    x = torch.randn((2, size[0]) + tuple(min(s, 64) for s in size[1:]))
    model.train()(x).sum().backward()


def test_inception_resnet_takes_drop_path_rate():
    model = senet.create_model("se_inception_resnet_v2", drop_path_rate=0.2, num_classes=0)
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    assert len(rates) == 39 and rates[-1] == pytest.approx(0.2)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_bad_rate_is_a_one_line_error(rate):
    with pytest.raises(ConfigError, match=r"drop_path_rate must be in \[0, 1\)") as error:
        senet.create_model("se_resnet18", drop_path_rate=rate)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["se_vgg16_bn", "se_mobilenet_v1", "se_inception_v3", "se_bn_inception"])
def test_families_without_residual_units_refuse_drop_path_rate(name):
    with pytest.raises(ConfigError, match="has no residual units") as error:
        senet.create_model(name, drop_path_rate=0.1)
    assert "\n" not in str(error.value)


# --- drop_rate on the Wide ResNet: dropout between the two 3x3 convs of each block -------------------


def test_wrn_drop_rate_is_dropout_between_its_convs():
    model = senet.create_model("se_wrn16_8", drop_rate=0.3)
    drops = [m.drop.p for m in model.modules() if type(m).__name__ == "WideBasic"]
    assert drops == [0.3] * 6
    assert model.drop.p == 0.0  # no dropout before the classifier (Zagoruyko & Komodakis)
    x = torch.randn(2, 3, 16, 16)
    model.train()
    torch.manual_seed(0)
    first = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(first, model(x))  # training: varies with the dropout mask
    model.eval()
    torch.testing.assert_close(model(x), model(x))  # eval: deterministic


def test_wrn_drop_rate_zero_changes_nothing():
    torch.manual_seed(0)
    default = senet.create_model("wrn16_8", num_classes=4).eval()
    torch.manual_seed(0)
    zero = senet.create_model("wrn16_8", num_classes=4, drop_rate=0.0).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(default(x), zero(x), atol=0, rtol=0)


def test_other_cifar_models_keep_drop_rate_before_the_classifier():
    model = senet.create_model("se_resnet20", drop_rate=0.3)
    assert model.drop.p == 0.3
    assert not any(isinstance(m, torch.nn.Dropout) and m is not model.drop for m in model.modules())


def test_drop_path_with_the_shortcut_kept_equals_naive():
    """Pre-activation units (no BN to fold: the fused merge keeps the shortcut and rebuilds x, where a
    dropped sample's s is 0) with drop path: fused and naive give the same output and gradients (float64)."""
    torch.manual_seed(0)
    model = senet.create_model("se_resnet164", num_classes=5, drop_path_rate=0.5).double().train()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    results = []
    for impl in ("fused", "naive"):
        net = copy.deepcopy(model).set_se_impl(impl)
        torch.manual_seed(3)
        out = net(x)
        out.square().sum().backward()
        results.append([out.detach()] + [p.grad for p in net.parameters()])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
