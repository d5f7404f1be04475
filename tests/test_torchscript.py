"""`torch.jit.script` on every registered model: the scripted program gives the eager outputs, in eval
and in train mode (units script through their plain-formula branch, `SEResidualUnit.se_sum`)."""

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


def assert_scripts(name: str, *, rtol: float = 1e-9, **kwargs) -> None:
    """Scripted and eager agree in float64, in eval and in train mode (BN batch statistics, gradients);
    outputs within `rtol` of the largest output."""
    torch.manual_seed(0)
    model = senet.create_model(name, num_classes=5, **kwargs).double()
    x = small_input(model, name)
    for train in (False, True):
        eager = copy.deepcopy(model).train(train)
        scripted = torch.jit.script(copy.deepcopy(model).train(train))
        torch.manual_seed(1)
        want = eager(x)
        torch.manual_seed(1)
        got = scripted(x)
        torch.testing.assert_close(got, want, atol=rtol * max(1.0, want.abs().max().item()), rtol=rtol)
        if train:
            want.sum().backward()
            got.sum().backward()
            # Relative to the largest gradient (a stem's reach 1e3; a bias before BN gets round-off only). From
            # its second run on, TorchScript's executor differentiates its own graph, which rounds differently.
            scale = max(p.grad.abs().max().item() for p in eager.parameters())
            for (pname, p), q in zip(eager.named_parameters(), scripted.parameters()):
                torch.testing.assert_close(q.grad, p.grad, atol=1e-7 * scale, rtol=1e-6, msg=pname)


@pytest.mark.parametrize("name", FAST)
def test_script_matches_eager(name):
    assert_scripts(name)


@pytest.mark.parametrize("position", ["pre", "post", "identity", "3x3"])
def test_script_every_se_position(position):
    assert_scripts("se_resnet20", se_position=position)


def test_script_relu_before_se_and_per_stage_reduction():
    assert_scripts("se_resnet18", relu_before_se=True, reduction=(4, 8, 8, 16))


def test_script_with_drop_path_in_eval():
    """Eval: drop path is the identity in both; the scripted program holds the same DropPath modules."""
    torch.manual_seed(0)
    model = senet.create_model("se_resnet20", drop_path_rate=0.2).double().eval()
    x = small_input(model, "se_resnet20")
    torch.testing.assert_close(torch.jit.script(model)(x), model(x), atol=1e-9, rtol=1e-9)


def test_scripted_model_saves_and_loads(tmp_path):
    model = senet.create_model("se_resnet20", num_classes=3).eval()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(torch.jit.load(str(path))(x), model(x))


# Each in a process of its own: scripted in float64 the large models peak at 8-10 GB (VGG-16's 4096-wide
# classifier in the eager, scripted and gradient copies), and TorchScript keeps what it compiled for every
# model until the process ends; one worker scripting the zoo in turn grew past 15 GB and was OOM-killed
# on a 24 GB machine.
SCRIPT_ONE = "import sys; sys.path.insert(0, sys.argv[1]); from test_torchscript import assert_scripts; " \
             "assert_scripts(sys.argv[2], rtol=1e-5)"


@pytest.mark.slow
@pytest.mark.parametrize("name", senet.list_models())
def test_script_every_model(name):
    # Randomly initialised deep networks amplify round-off (se_resnet152's logits reach 1e3, and the fused
    # eager merge and the scripted formula sum in different orders; 3-D ResNets at 16^3 end in 1x1x1 maps
    # whose batch statistics are of two values): the same 1e-5 of the output scale as eager fused vs naive.
    done = subprocess.run([sys.executable, "-c", SCRIPT_ONE, str(Path(__file__).parent), name], capture_output=True,
                          text=True, env=subprocess_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


# features_only backbones, one per family: name -> out_indices (the larger ones cut early, which keeps the
# nested stems and the maps out of order). Eager runs the naive SE path, as the scripted program does, so
# the maps are the same to the bit.
FEATURES = {"se_resnet18": (3, 0, 1), "se_resnet20": None, "se_resnet18_1d": None, "mobilenet_v3_small": None,
            "se_shufflenet_v1_g3": None, "se_bn_inception": (2, 0), "se_inception_resnet_v2": (0, 1, 2),
            "se_vgg16_bn": (0, 1)}


@pytest.mark.parametrize("name", list(FEATURES))
def test_script_and_fx_trace_of_features_only_give_the_eager_maps(name):
    torch.manual_seed(0)
    net = set_se_impl(senet.create_model(name, features_only=True, out_indices=FEATURES[name]), "naive").eval()
    size = net.default_input_size
    x = torch.randn((2, size[0]) + ((256,) if len(size) == 2 else (80, 80)))
    with torch.no_grad():
        want = net(x)
        outputs = {"script": torch.jit.script(net)(x), "fx": torch.fx.symbolic_trace(net)(x)}
    assert [m.shape[1] for m in want] == net.feature_info.channels()
    for how, got in outputs.items():
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=how)
