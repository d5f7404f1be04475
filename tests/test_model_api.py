"""The model API timm and torchvision users expect (issue 13), in timm's style over every registered model:
torch.fx tracing, feature maps (`features_only`, `feature_info`) and gradient checkpointing.

The fast set has one small model per family; the rest of the zoo runs behind `slow`."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import Tensor, nn

from senet import load_model
from senet.errors import ConfigError
from senet.layers import ShapeError
from senet.models import create_model, list_models, model_family
from senet.models.features import FeatureInfo, FeatureListNet, with_features_only

FAST = {  # one small model per family
    "resnet": "se_resnet18", "cifar": "se_resnet20", "vgg": "se_vgg16_bn", "inception": "se_bn_inception",
    "inception_resnet": "se_inception_resnet_v2", "mobilenet": "mobilenet_v3_small",
    "shufflenet": "se_shufflenet_v1_g3", "resnet_nd": "se_resnet18_1d",
}
FAST_CHECKPOINTED = ("se_resnet18", "se_resnet20", "mobilenet_v3_small", "se_shufflenet_v1_g3")


def zoo(fast: tuple[str, ...] | list[str]) -> list[object]:
    """Every registered model: those in `fast` as they are, the others marked slow."""
    return [name if name in fast else pytest.param(name, marks=pytest.mark.slow) for name in list_models()]


@functools.lru_cache(maxsize=8)
def built(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=7)


def small_input(model: nn.Module, batch: int = 2, dtype: torch.dtype = torch.float32) -> Tensor:
    """A small batch the model takes: 32 pixels a side (80 for the Inceptions' valid-padded stems)."""
    side = 80 if model.min_input_size > 32 else 32
    spatial = (side,) * model.spatial_dims if model.spatial_dims != 1 else (256,)
    generator = torch.Generator().manual_seed(1)
    return torch.randn((batch, model.in_chans) + spatial, generator=generator, dtype=dtype)


@pytest.mark.parametrize("name", zoo(list(FAST.values())))
def test_fx_trace_equals_eager_and_keeps_the_input_check(name: str) -> None:
    model = copy.deepcopy(built(name)).double().eval()
    traced = torch.fx.symbolic_trace(model)
    x = small_input(model, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=1e-7, atol=1e-9)
    checks = [n for n in traced.graph.nodes if n.op == "call_function" and n.target.__name__ == "check_image_batch"]
    assert len(checks) == 1
    wrong = torch.zeros((1, model.in_chans + 1) + x.shape[2:], dtype=torch.float64)
    with pytest.raises(ShapeError, match="input channels"):
        traced(wrong)


@pytest.mark.parametrize("name", zoo(list(FAST.values())))
def test_features_only_maps_match_feature_info_and_the_model(name: str) -> None:
    model = built(name).eval()
    info = model.feature_info
    assert isinstance(info, FeatureInfo) and len(info) == len(info.channels()) >= 3
    assert info.reduction() == sorted(info.reduction())
    hooked: dict[str, Tensor] = {}
    handles = [
        model.get_submodule(module).register_forward_hook(
            lambda _m, _i, out, module=module: hooked.__setitem__(module, out.clone()))
        for module in info.module_name()
    ]
    x = small_input(model)
    try:
        with torch.no_grad():
            last = model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    net = with_features_only(model, True)
    with torch.no_grad():
        maps = net(x)
    assert len(maps) == len(info)
    for fmap, entry in zip(maps, info.get_dicts()):
        assert fmap.shape[1] == entry["num_chs"]
        for side, size in zip(x.shape[2:], fmap.shape[2:]):  # valid-padded stems are a little smaller
            assert side // (2 * entry["reduction"]) <= size <= -(-side // entry["reduction"]) + 1
        torch.testing.assert_close(fmap, hooked[entry["module"]], rtol=0, atol=0)
    torch.testing.assert_close(maps[-1], last, rtol=0, atol=0)
    assert set(net.state_dict()) <= set(model.state_dict())  # the model's own keys: its weights load


@pytest.mark.parametrize("name", zoo(FAST_CHECKPOINTED))
def test_grad_checkpointing_gives_the_same_loss_gradients_and_bn_statistics(name: str) -> None:
    plain = copy.deepcopy(built(name)).double().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    x = small_input(plain, dtype=torch.float64)
    losses = []
    for model in (plain, checkpointed):
        torch.manual_seed(0)  # the same dropout masks
        out = model(x)
        out = out.logits if hasattr(out, "logits") else out
        loss = out.square().mean()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=0)
    for (key, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert p.grad is not None, key
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=key)
    for (key, b), c in zip(plain.named_buffers(), checkpointed.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-12, atol=0, msg=key)  # BN statistics updated once


def test_grad_checkpointing_recomputes_in_backward() -> None:
    model = copy.deepcopy(built("se_resnet18")).train()
    calls = []
    model.layer1[0].conv1.register_forward_hook(lambda *_: calls.append(1))
    model.set_grad_checkpointing()
    model(small_input(model)).sum().backward()
    assert len(calls) == 2  # forward, then once more in backward
    model.set_grad_checkpointing(False)
    model(small_input(model)).sum().backward()
    assert len(calls) == 3


def test_the_documented_se_resnet50_backbone() -> None:
    net = create_model("se_resnet50", features_only=True, out_indices=(1, 2, 3, 4))
    assert isinstance(net, FeatureListNet)
    assert net.feature_info.channels() == [256, 512, 1024, 2048]
    assert net.feature_info.reduction() == [4, 8, 16, 32]
    assert net.feature_info.module_name() == ["layer1", "layer2", "layer3", "layer4"]
    assert net.feature_info[0] == {"num_chs": 64, "reduction": 2, "module": "stem.relu1"}
    assert [tuple(m.shape) for m in net.eval()(torch.randn(1, 3, 64, 64))] == [
        (1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 4, 4), (1, 2048, 2, 2)]
    assert not any(key.startswith("fc.") for key in net.state_dict())
    assert create_model("se_resnet50", features_only=True, out_indices=(-1,)).feature_info.channels() == [2048]


def test_load_model_gives_the_backbone_of_a_checkpoint(tmp_path) -> None:
    safetensors = pytest.importorskip("safetensors.torch")
    model = built("se_resnet18").eval()
    path = tmp_path / "weights.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    backbone = load_model(path, model="se_resnet18", features_only=True, out_indices=(1, 2))
    assert isinstance(backbone, FeatureListNet) and not backbone.training
    x = small_input(model)
    with torch.no_grad():
        expected = with_features_only(model, True, (1, 2))(x)
        for mine, theirs in zip(backbone(x), expected):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features_only": True, "out_indices": (5,)}, "not valid: .* 5 feature stages"),
        ({"features_only": True, "out_indices": (1, 1)}, "names a stage twice"),
        ({"features_only": True, "out_indices": ("layer1",)}, "not valid"),
        ({"features_only": True, "out_indices": ()}, "not valid"),
        ({"out_indices": (1, 2)}, "pass features_only=True"),
    ],
)
def test_bad_out_indices_are_one_line_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        create_model("resnet18", **kwargs)
    assert "\n" not in str(error.value)


def test_the_input_check_is_one_line_and_includes_the_minimum_size() -> None:
    model = built("se_inception_resnet_v2")
    with pytest.raises(ShapeError, match="at least 75x75") as error:
        model(torch.randn(1, 3, 64, 64))
    assert "\n" not in str(error.value)
    with pytest.raises(ShapeError, match="4-D batch"):
        with_features_only(model, True)(torch.randn(3, 80, 80))


# ---------------------------------------------------------------------------------------------------
# Against the peers (timm, torchvision), in the peer environment.

TIMM_TWINS = {"se_resnet50": "seresnet50", "resnet50": "resnet50", "inception_v3": "inception_v3",
              "inception_resnet_v2": "inception_resnet_v2", "mobilenet_v3_large": "mobilenetv3_large_100",
              "mobilenet_v3_small": "mobilenetv3_small_100", "se_resnext26d_32x4d": "seresnext26d_32x4d"}


@pytest.mark.peer
@pytest.mark.parametrize("name", list(TIMM_TWINS))
def test_peer_feature_info_equals_timms(name: str) -> None:
    timm = pytest.importorskip("timm")
    theirs = timm.create_model(TIMM_TWINS[name], pretrained=False, features_only=True).feature_info
    ours = create_model(name).feature_info
    assert ours.channels() == theirs.channels()
    assert ours.reduction() == theirs.reduction()


@pytest.mark.peer
@pytest.mark.parametrize("name", ["se_resnet50", "mobilenet_v3_large", "se_inception_v3"])
def test_peer_torchvision_feature_extractor_equals_features_only(name: str) -> None:
    feature_extraction = pytest.importorskip("torchvision.models.feature_extraction")
    model = create_model(name).double().eval()  # (float64: the traced merge is the fused one's formula)
    names = model.feature_info.module_name()
    extractor = feature_extraction.create_feature_extractor(model, return_nodes={n: n for n in names})
    x = small_input(model, batch=1, dtype=torch.float64)
    with torch.no_grad():
        theirs = extractor(x)
        ours = with_features_only(model, True)(x)
    assert list(theirs) == names
    for mine, (node, fmap) in zip(ours, theirs.items()):
        torch.testing.assert_close(mine, fmap, rtol=1e-9, atol=1e-12, msg=node)
