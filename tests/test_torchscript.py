"""TorchScript by tracing (`torch.jit.trace`) on every registered model: the traced program gives the eager
outputs and gradients, in eval and in train mode. Each unit's forward is written once; under a tracer the
merge (`senet.layers.merge.merge`) records the formula's plain operations. `torch.jit.script` is not
supported (docs/model-api.md says why)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_fixtures import subprocess_env

import senet
from senet.layers import set_se_impl

# One small model per family (and per residual-unit kind) for the fast suite. VGG and Inception-ResNet have
# no small model (se_vgg16_bn takes ~29 s here on one thread, se_inception_resnet_v2 ~20 s): the slow test.
FAST = ("se_resnet18", "se_resnext26_32x4d", "se_resnet18_1d", "se_resnet20", "se_wrn16_8",
        "se_mobilenet_v1", "mobilenet_v3_small", "se_shufflenet_v1_g3", "se_bn_inception")


def small_input(model: torch.nn.Module, name: str) -> torch.Tensor:
    size = model.default_input_size
    if "inception" in name:
        return torch.randn(2, size[0], 75, 75, dtype=torch.float64)
    # 2-D: 64 pixels, so that no stage of an ImageNet model is 1x1 (batch statistics of two values make gradients ill-conditioned)
    # 3-D: 16^3 ends in 1x1x1 maps, so a batch of 8 (BN statistics of two values there are ill-conditioned:
    # eager's fused and naive SE differ by O(1) in train mode at batch 2)
    # (CIFAR models at their own 32: they downsample 4x, to 8x8)
    side = {4: 16, 3: min(64, size[-1]), 2: 256}[len(size)]
    batch = 8 if len(size) == 4 else 2
    return torch.randn((batch, size[0]) + (side,) * (len(size) - 1), dtype=torch.float64)


def assert_traces(name: str, *, rtol: float = 1e-9, **kwargs) -> None:
    """Traced and eager agree in float64, in eval and in train mode (BN batch statistics, gradients);
    outputs within `rtol` of the largest output."""
    torch.manual_seed(0)
    model = senet.create_model(name, num_classes=5, **kwargs).double()
    x = small_input(model, name)
    for train in (False, True):
        eager = copy.deepcopy(model).train(train)
        traced = torch.jit.trace(copy.deepcopy(model).train(train), (x,), check_trace=False)
        torch.manual_seed(1)  # (dropout: the same masks)
        want = eager(x)
        torch.manual_seed(1)
        got = traced(x)
        torch.testing.assert_close(got, want, atol=rtol * max(1.0, want.abs().max().item()), rtol=rtol)
        if train:
            want.sum().backward()
            got.sum().backward()
            # Relative to the largest gradient (a stem's reach 1e3; a bias before BN gets round-off only).
            scale = max(p.grad.abs().max().item() for p in eager.parameters())
            grads = dict(traced.named_parameters())
            for pname, p in eager.named_parameters():
                torch.testing.assert_close(grads[pname].grad, p.grad, atol=1e-7 * scale, rtol=1e-6, msg=pname)


@pytest.mark.parametrize("name", FAST)
def test_trace_matches_eager(name):
    assert_traces(name)


@pytest.mark.parametrize("position", ["pre", "post", "identity", "3x3"])
def test_trace_every_se_position(position):
    assert_traces("se_resnet20", se_position=position)


def test_trace_relu_before_se_and_per_stage_reduction():
    assert_traces("se_resnet18", relu_before_se=True, reduction=(4, 8, 8, 16))


def test_trace_with_drop_path_in_eval():
    """Eval: drop path is the identity in both."""
    torch.manual_seed(0)
    model = senet.create_model("se_resnet20", drop_path_rate=0.2).double().eval()
    x = small_input(model, "se_resnet20")
    torch.testing.assert_close(torch.jit.trace(model, (x,))(x), model(x), atol=1e-9, rtol=1e-9)


def test_traced_model_saves_and_loads_and_takes_other_batch_sizes(tmp_path):
    model = senet.create_model("se_resnet20", num_classes=3).eval()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(model, (torch.randn(2, 3, 32, 32),)), str(path))
    x = torch.randn(5, 3, 32, 32)
    torch.testing.assert_close(torch.jit.load(str(path))(x), model(x))


def test_script_is_not_supported():
    """The merge's fused path is a Python decision around a custom op; TorchScript cannot compile it (and is
    deprecated): scripting fails rather than giving a model with a second, untested forward."""
    with pytest.raises(Exception):
        torch.jit.script(senet.create_model("se_resnet20").eval())


# Each in a process of its own: in float64 the large models peak at 8-10 GB (VGG-16's 4096-wide classifier
# in the eager, traced and gradient copies), and a process keeps what glibc freed.
TRACE_ONE = "import sys; sys.path.insert(0, sys.argv[1]); from test_torchscript import assert_traces; " \
            "assert_traces(sys.argv[2], rtol=1e-5)"


@pytest.mark.slow
@pytest.mark.parametrize("name", senet.list_models())
def test_trace_every_model(name):
    # Randomly initialised deep networks amplify round-off (se_resnet152's logits reach 1e3, and the fused
    # eager merge and the traced formula sum in different orders; 3-D ResNets at 16^3 end in 1x1x1 maps
    # whose batch statistics are of two values): the same 1e-5 of the output scale as eager fused vs naive.
    done = subprocess.run([sys.executable, "-c", TRACE_ONE, str(Path(__file__).parent), name], capture_output=True,
                          text=True, env=subprocess_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


# features_only backbones, one per family: name -> out_indices (the larger ones cut early, which keeps the
# nested stems and the maps out of order). Eager runs the naive SE path, as the traced programs do, so the
# maps are the same to the bit.
FEATURES = {"se_resnet18": (3, 0, 1), "se_resnet20": None, "se_resnet18_1d": None, "mobilenet_v3_small": None,
            "se_shufflenet_v1_g3": None, "se_bn_inception": (2, 0), "se_inception_resnet_v2": (0, 1, 2),
            "se_vgg16_bn": (0, 1)}


@pytest.mark.parametrize("name", list(FEATURES))
def test_jit_and_fx_traces_of_features_only_give_the_eager_maps(name):
    torch.manual_seed(0)
    net = set_se_impl(senet.create_model(name, features_only=True, out_indices=FEATURES[name]), "naive").eval()
    size = net.default_input_size
    x = torch.randn((2, size[0]) + ((256,) if len(size) == 2 else (80, 80)))
    with torch.no_grad():
        want = net(x)
        outputs = {"jit": torch.jit.trace(net, (x,))(x), "fx": torch.fx.symbolic_trace(net)(x)}
    assert [m.shape[1] for m in want] == net.feature_info.channels()
    for how, got in outputs.items():
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=how)
