"""Every registered model: forward, backward, shapes, SE blocks executed (timm-style model tests)."""

from __future__ import annotations

import pytest
import torch

import senet
from senet.layers import SqueezeExcitation
from senet.models import is_se_model, list_models, plain_twin

ALL_MODELS = list_models()
# Deeper members of families whose shallower members run in the fast suite (the same units, more of them;
# 1-7 s each): `make test-slow` runs them.
HEAVY = {"vgg16_bn", "senet154_plain", "resnext101_32x8d", "se_resnext101_32x8d", "resnext101_64x4d",
         "se_resnext101_64x4d", "resnet101", "se_resnet101", "resnet152", "se_resnet152", "resnext101_32x4d",
         "se_resnext101_32x4d", "resnet110", "se_resnet110", "resnet34_3d", "se_resnet34_3d", "resnet50_3d"}
ZOO = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in ALL_MODELS]


def small_input(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    """A small input the model takes: CIFAR-sized models at their size, ImageNet-sized ones at 64 (or their minimum)."""
    channels, *spatial = model.default_input_size
    side = spatial[-1]
    small = side if side <= 64 else max(64, getattr(model, "min_input_size", 64))
    spatial = [min(s, small) for s in spatial]
    return torch.randn(batch, channels, *spatial)


@pytest.mark.parametrize("name", ZOO)
def test_forward_backward_and_se_blocks_run(name: str) -> None:
    model = senet.create_model(name, num_classes=7)
    x = small_input(model)
    calls: dict[str, int] = {}
    se_names = [n for n, m in model.named_modules() if isinstance(m, SqueezeExcitation)]
    for module_name in se_names:
        module = model.get_submodule(module_name).gate  # (called as a module by either SE implementation)
        module.register_forward_hook(lambda m, i, o, key=module_name: calls.__setitem__(key, calls.get(key, 0) + 1))

    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    assert (len(se_names) > 0) == is_se_model(name)
    assert sorted(calls) == sorted(se_names), "some SE blocks are registered but never called"

    loss = logits.square().mean() + (out[1].square().mean() if isinstance(out, tuple) else 0)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if is_se_model(n)])
def test_every_se_model_has_a_registered_plain_twin(name: str) -> None:
    twin = plain_twin(name)
    assert twin in ALL_MODELS
    with torch.device("meta"):
        se_model, plain = senet.create_model(name), senet.create_model(twin)
    se_params = sum(p.numel() for m in se_model.modules() if isinstance(m, SqueezeExcitation) for p in m.parameters())
    total = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert total(se_model) - se_params == total(plain)


@pytest.mark.parametrize("name", ["se_resnet18", "se_resnet20", "se_resnext50_32x4d"])
def test_model_api(name: str) -> None:
    model = senet.create_model(name, num_classes=5, in_chans=1).eval()
    x = small_input(model)
    features = model.forward_features(x)
    assert features.shape[1] == model.num_features
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(features), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (97, 64), (256, 192)])
def test_any_input_size(size: tuple[int, int]) -> None:
    model = senet.create_model("se_resnet18", num_classes=4).eval()
    assert model(torch.randn(1, 3, *size)).shape == (1, 4)


def test_channels_last_model_matches_contiguous() -> None:
    model = senet.create_model("se_resnet18", num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-4)


def test_zero_init_last_makes_blocks_start_as_identity_maps() -> None:
    model = senet.create_model("se_resnet50", zero_init_last=True)
    assert all(torch.all(block.bn3.weight == 0) for block in model.layer1)
    assert not torch.all(senet.create_model("se_resnet50").layer1[0].bn3.weight == 0)


def test_drop_rate_and_senet154_default_dropout() -> None:
    with torch.device("meta"):
        assert senet.create_model("senet154").drop.p == 0.2
        assert senet.create_model("se_resnet50", drop_rate=0.3).drop.p == 0.3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_trace_matches_eager() -> None:
    model = senet.create_model("se_resnet20").eval()
    traced = torch.jit.trace(model, torch.randn(2, 3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(traced(x), model(x))


@pytest.mark.slow  # Inductor's C++ code from a cold cache: ~36 s here (make test: graphs through aot_eager, test_fused_se.py)
def test_torch_compile_matches_eager() -> None:
    model = senet.create_model("se_resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
