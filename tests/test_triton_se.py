"""The Triton kernels of the SE merge (senet.layers.triton_se) against PyTorch's formula.

GPU tests (`make test-slow` on a machine with CUDA), which also run on the CPU under Triton's interpreter:
`make test-kernels` (``TRITON_INTERPRET=1 pytest -m triton tests/test_triton_se.py`` with Triton
installed). CPU-only installs have no Triton and never take the kernels' path.
"""

from __future__ import annotations

import copy

import pytest
import torch

import senet
from senet.layers import set_se_impl
from senet.layers import triton_se

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.triton,
    pytest.mark.skipif(not triton_se.available(), reason="needs Triton (it comes with PyTorch's CUDA wheels)"),
]

SHAPES = {  # name: (shape, memory format)
    "nchw": ((3, 40, 5, 7), torch.contiguous_format),
    "nhwc": ((3, 40, 5, 7), torch.channels_last),
    "ncl": ((2, 24, 33), torch.contiguous_format),
    "ndhwc": ((2, 20, 3, 4, 5), torch.channels_last_3d),
    "wide": ((2, 300, 2, 3), torch.channels_last),
}
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _tensor(shape, fmt, dtype, *, positive=False):
    t = torch.rand(shape, device=DEVICE) + 0.05 if positive else torch.randn(shape, device=DEVICE)
    return t.to(dtype).contiguous(memory_format=fmt)


@pytest.fixture(autouse=True)
def _no_tf32():
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.parametrize("layout", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("full_shift", [True, False])
def test_scale_shift(layout, dtype, relu, full_shift):
    shape, fmt = SHAPES[layout]
    x = _tensor(shape, fmt, dtype)
    scale = _tensor(shape[:2] + (1,) * (len(shape) - 2), torch.contiguous_format, dtype, positive=True)
    shift = _tensor(shape, fmt, dtype) if full_shift else _tensor(scale.shape, torch.contiguous_format, dtype)
    assert triton_se.supported(x, *([shift] if full_shift else []), scale=scale)
    want = torch.addcmul(shift.float(), x.float(), scale.float())
    want = want.relu() if relu else want
    got = triton_se.scale_shift(x, scale, shift, relu=relu)
    assert got.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(got.float(), want, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
    inplace = x.clone(memory_format=fmt)
    assert triton_se.scale_shift(inplace, scale, shift, relu=relu, out=inplace) is inplace
    torch.testing.assert_close(inplace, got, atol=0, rtol=0)


@pytest.mark.parametrize("layout", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("relu,recompute", [(True, False), (True, True), (False, False)])
def test_merge_backward(layout, dtype, relu, recompute):
    shape, fmt = SHAPES[layout]
    x, skip = _tensor(shape, fmt, dtype), _tensor(shape, fmt, dtype)
    scale = _tensor(shape[:2] + (1,) * (len(shape) - 2), torch.contiguous_format, dtype, positive=True)
    out = torch.addcmul(skip, x, scale)
    out = out.relu() if relu else out
    grad_out = _tensor(shape, fmt, dtype)
    g, grad_x, grad_scale = triton_se.merge_backward(
        grad_out, out, skip if recompute else x, scale, relu=relu, recompute=recompute, grad_x=True
    )
    want_g = torch.where(out > 0, grad_out, 0) if relu else grad_out
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(g, want_g, atol=0, rtol=0)
    torch.testing.assert_close(grad_x.float(), want_g.float() * scale.float(), atol=tol, rtol=tol)
    want_scale = (want_g.double() * x.double()).sum_to_size(scale.shape)
    assert grad_scale.dtype == scale.dtype and grad_scale.shape == scale.shape
    # bf16 recompute divides a difference of rounded values: compare relative to the gradient's size
    torch.testing.assert_close(grad_scale.double(), want_scale, atol=tol * want_scale.abs().max().item() * (10 if recompute else 1), rtol=tol)
    g2, none, _ = triton_se.merge_backward(grad_out, out, x, scale, relu=relu, recompute=False, grad_x=False)
    assert none is None and torch.equal(g2, g)


@pytest.mark.parametrize("layout", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_backward_rebuilds_x_from_the_bn(layout, dtype):
    """Given the BN input c and x = c * alpha + beta, dL/ds is the same as from x itself (in float32)."""
    shape, fmt = SHAPES[layout]
    c, skip = _tensor(shape, fmt, dtype), _tensor(shape, fmt, dtype)
    channels = shape[1]
    alpha = torch.rand(1, channels, *(1,) * (len(shape) - 2), device=DEVICE) + 0.5
    beta = torch.randn(alpha.shape, device=DEVICE)
    x = c.float() * alpha + beta
    scale = _tensor(shape[:2] + (1,) * (len(shape) - 2), torch.contiguous_format, dtype, positive=True)
    out = torch.addcmul(skip.float(), x, scale.float()).relu().to(dtype)
    grad_out = _tensor(shape, fmt, dtype)
    g, grad_x, grad_scale = triton_se.merge_backward(
        grad_out, out, c, scale, relu=True, recompute=False, grad_x=True, affine=(alpha, beta)
    )
    want_g = torch.where(out > 0, grad_out, 0)
    assert torch.equal(g, want_g)
    want_scale = (want_g.double() * x.double()).sum_to_size(scale.shape)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(grad_scale.double(), want_scale, atol=tol * want_scale.abs().max().item(), rtol=tol)
    with pytest.raises(ValueError, match="give one"):
        triton_se.merge_backward(grad_out, out, c, scale, relu=True, recompute=True, grad_x=False, affine=(alpha, beta))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("downsample", [False, True])
def test_kernel_path_keeps_no_extra_activation(dtype, downsample, monkeypatch):
    """Through the kernels too, a fused SE unit keeps what the plain unit keeps plus (N, C) vectors (x is
    rebuilt from its BN), in float32 and bfloat16, and is as close to float64 as the formula is."""
    calls = []
    merge_backward = triton_se.merge_backward
    monkeypatch.setattr(triton_se, "merge_backward", lambda *a, **k: calls.append(k.get("affine")) or merge_backward(*a, **k))
    from senet.bench import saved_storages
    from senet.layers import SEConfig
    from senet.models.resnet import Bottleneck

    torch.manual_seed(0)
    x = torch.randn(2, 64, 14, 14, device=DEVICE, dtype=dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    projection = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 1, bias=False), torch.nn.BatchNorm2d(64))

    def kept(unit):
        parameters = {p.untyped_storage().data_ptr() for p in unit.parameters()}
        outputs = []
        storages = saved_storages(lambda: outputs.append(unit(x)))
        out = outputs[0]
        assert triton_se.supported(out)
        return sum(size for ptr, size in storages.items() if ptr not in parameters), out

    def build(se):
        unit = Bottleneck(64, 16, downsample=copy.deepcopy(projection) if downsample else None, se=se)
        return unit.to(DEVICE, dtype).to(memory_format=torch.channels_last)

    plain, _ = kept(build(None))
    unit = build(SEConfig())
    fused, out = kept(unit)
    assert fused - plain < x.numel() * x.element_size() / 20
    weight = torch.randn(out.shape, dtype=torch.float64, device=DEVICE)

    def flat(net, result, inputs):
        return torch.cat([t.detach().flatten().double() for t in [result, inputs.grad] + [p.grad for p in net.parameters()]])

    def run(net, inputs):
        net, inputs = copy.deepcopy(net), inputs.detach().clone().requires_grad_()
        net.zero_grad(set_to_none=True)
        set_se_impl(net, "naive")
        result = net(inputs)
        (result.double() * weight).sum().backward()
        return flat(net, result, inputs)

    (out.double() * weight).sum().backward()  # the fused output, already computed through the kernels
    got = flat(unit, out, x)
    assert len(calls) == 1 and calls[0] is not None  # the kernel rebuilt x from the BN
    reference = run(unit.double(), x.double())  # the formula in float64
    naive = run(unit.to(dtype), x)  # the formula in the test's dtype
    error = {name: ((v - reference).norm() / reference.norm()).item() for name, v in (("fused", got), ("naive", naive))}
    assert error["fused"] <= 2 * error["naive"] + 1e-6, error


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_path_rebuilds_x_from_the_shortcut(dtype, monkeypatch):
    """Inception-ResNet units (no BN to fold, a ReLU, identity shortcuts) through the kernels: the backward
    rebuilds x from the kept shortcut (recompute mode), as close to float64 as the formula is."""
    calls = []
    merge_backward = triton_se.merge_backward
    monkeypatch.setattr(triton_se, "merge_backward", lambda *a, **k: calls.append(k["recompute"]) or merge_backward(*a, **k))
    from senet.layers import SEConfig
    from senet.models.inception_resnet import block35

    torch.manual_seed(0)
    units = torch.nn.Sequential(block35(SEConfig()), block35(SEConfig())).to(DEVICE)
    x = torch.randn(2, 320, 5, 5, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(2, 320, 5, 5, dtype=torch.float64, device=DEVICE)

    def run(net, inputs, impl):
        net, inputs = set_se_impl(copy.deepcopy(net), impl), inputs.detach().clone().requires_grad_()
        result = net(inputs)
        (result.double() * weight).sum().backward()
        return torch.cat([t.detach().flatten().double() for t in [result, inputs.grad] + [p.grad for p in net.parameters()]])

    cast = copy.deepcopy(units).to(dtype).to(memory_format=torch.channels_last)
    got = run(cast, x.to(dtype), "fused")
    assert calls == [True, True]
    reference = run(units.double(), x.double(), "naive")
    naive = run(cast, x.to(dtype), "naive")
    error = {name: ((v - reference).norm() / reference.norm()).item() for name, v in (("fused", got), ("naive", naive))}
    assert error["fused"] <= 2 * error["naive"] + 1e-6, error


def test_other_layouts_and_scales_are_not_taken():
    x = torch.randn(2, 4, 3, 3, device=DEVICE)
    assert not triton_se.supported(x, x.transpose(2, 3))  # a different memory layout
    assert not triton_se.supported(x, x, scale=torch.rand(2, 4, 3, 3, device=DEVICE))  # squeeze "none"
    assert not triton_se.supported(x.to(torch.float64))


@pytest.mark.parametrize("channels_last", [False, True])
def test_se_resnet_step_matches_formula(channels_last):
    """A whole SE-ResNet training step through the kernels is as close to a float64 reference as the
    straightforward formula in float32 is (they sum in different orders, so they differ by rounding)."""
    model = senet.create_model("se_resnet18", num_classes=5).to(DEVICE)
    x = torch.randn(4, 3, 32, 32, device=DEVICE)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    def step(net, inputs, fused):
        net = set_se_impl(copy.deepcopy(net), "fused" if fused else "naive")
        out = net(inputs)
        out.square().mean().backward()
        return torch.cat([out.detach().flatten().double()] + [p.grad.flatten().double() for p in net.parameters()])

    reference = step(model.double(), x.double(), False)
    model, x = model.float(), x.float()
    error = {fused: (step(model, x, fused) - reference).norm() / reference.norm() for fused in (True, False)}
    assert error[True] <= 3 * error[False] + 1e-6, error
