"""The fused SE path (senet.layers.merge, SqueezeExcitation.excite): the same results as the straightforward
formula in float64, forward and backward, in every integration position, memory format, dimensionality and
squeeze; less memory kept; hooks and complexity counts unchanged; the op passes `torch.library.opcheck`;
traceable by torch.compile without graph breaks."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
from torch import nn

import senet
from senet.bench import saved_storages
from senet.layers import SEConfig, SqueezeExcitation, merge, se_impl, set_se_impl
from senet.layers.merge import batch_norm_affine, fused_device, fuses, spatial_sums
from senet.models.resnet import BasicBlock, Bottleneck

CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


@pytest.fixture(autouse=True)
def _fuse_small_tensors(monkeypatch):
    """The merge fuses from `FUSE_MIN_ELEMENTS` elements on (below, the formula is faster); the tests here
    run the fused path on small tensors."""
    monkeypatch.setattr(importlib.import_module("senet.layers.merge"), "FUSE_MIN_ELEMENTS", 0)


def _run(module: nn.Module, inputs: list[torch.Tensor], fused: bool):
    """Output and gradients (inputs, then parameters) of module(*inputs) under one implementation."""
    module = set_se_impl(copy.deepcopy(module), "fused" if fused else "naive")
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = module(*inputs)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view(out.shape)
    (out * weight).sum().backward()
    grads = [t.grad for t in inputs] + [p.grad for p in module.parameters()]
    return out.detach(), grads, module


def assert_same(module: nn.Module, inputs: list[torch.Tensor], tol: float = 1e-10) -> None:
    """Fused and straightforward runs agree in float64 (outputs, every gradient, BN running statistics)."""
    out_fused, grads_fused, fused = _run(module, inputs, True)
    out_naive, grads_naive, naive = _run(module, inputs, False)
    torch.testing.assert_close(out_fused, out_naive, atol=tol, rtol=tol)
    for got, want in zip(grads_fused, grads_naive):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    for (name, got), want in zip(fused.state_dict().items(), naive.state_dict().values()):
        torch.testing.assert_close(got, want, atol=tol, rtol=tol, msg=name)



@pytest.mark.parametrize("dims", [1, 2, 3])
def test_block_without_biases_matches_formula(dims):
    """The eager excitation's fc1 without a bias (a matrix product times 1 / area) and MobileNetV3's gate."""
    se = SqueezeExcitation(8, 4, bias=False, gate="hard_sigmoid", dims=dims).double()
    assert_same(se, [torch.randn((2, 8) + (5, 4, 3)[:dims], dtype=torch.float64)])

# --- the autograd function -------------------------------------------------------------------------


def _op(c, alpha, beta, s, skip):
    return torch.ops.senet.se_merge(c * 1.0, alpha, beta, s, skip)  # c * 1.0: not a leaf


def _op_inputs(shape, channels_last=False):
    c = torch.randn(shape, dtype=torch.float64)
    skip = torch.randn(shape, dtype=torch.float64)
    if channels_last:
        c, skip = (t.contiguous(memory_format=CHANNELS_LAST[len(shape) - 2]) for t in (c, skip))
    s = torch.rand(shape[:2], dtype=torch.float64).add(0.05)
    alpha, beta = torch.rand(shape[1], dtype=torch.float64).add(0.5), torch.randn(shape[1], dtype=torch.float64)
    return [t.requires_grad_() for t in (c, alpha, beta, s, skip)]


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 3, 2), (2, 2, 2, 2, 2), (3, 3, 2, 2)])
def test_gradcheck(shape):
    """The merge op relu((c * alpha + beta) * s + skip), alpha and beta per channel, s per (n, c): its values
    are the formula's, its gradients (every input) the numerical ones."""
    inputs = _op_inputs(shape)
    assert torch.autograd.gradcheck(_op, inputs)
    c, alpha, beta, s, skip = inputs
    view = shape[:2] + (1,) * (len(shape) - 2)
    x = c * alpha.view(1, -1, *view[2:]) + beta.view(1, -1, *view[2:])
    torch.testing.assert_close(_op(*inputs), torch.relu(x * s.view(view) + skip))


def test_gradcheck_channels_last():
    assert torch.autograd.gradcheck(_op, _op_inputs((2, 3, 3, 2), channels_last=True))


def test_opcheck():
    """PyTorch's own check of a custom operator's registration (`torch.library.opcheck`): the schema (no
    mutation or aliasing it does not declare), the fake implementation's shapes and dtypes against the real
    one, the autograd registration, and AOTAutograd with dynamic shapes; for both ops."""
    args = _op_inputs((2, 3, 4, 5))
    torch.library.opcheck(torch.ops.senet.se_merge.default, tuple(args))
    c, alpha, beta, s, skip = (t.detach() for t in args)
    out = torch.ops.senet.se_merge(c, alpha, beta, s, skip)
    torch.library.opcheck(torch.ops.senet.se_merge_backward.default, (torch.randn_like(out), out, c, alpha, s))


# --- the SE module and the residual merge ------------------------------------------------------------

# Channels-last memory formats exist for 2-D and 3-D inputs only.
DIMS_AND_FORMATS = [(1, False), (2, False), (2, True), (3, False), (3, True)]


@pytest.mark.parametrize("dims, channels_last", DIMS_AND_FORMATS)
@pytest.mark.parametrize("squeeze", ["avg", "max", "none"])
@pytest.mark.parametrize("act", ["relu", "none", "silu"])
def test_module_matches_formula(dims, squeeze, channels_last, act):
    se = SqueezeExcitation(8, 4, squeeze=squeeze, dims=dims).double()
    activation = {"relu": nn.ReLU(inplace=True), "none": None, "silu": nn.SiLU()}[act]
    shape = (2, 8) + (5, 4, 3)[:dims]
    x, skip = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    if channels_last:
        x, skip = (t.contiguous(memory_format=CHANNELS_LAST[dims]) for t in (x, skip))

    class Merge(nn.Module):  # x is consumed, as in a residual unit
        def __init__(self):
            super().__init__()
            self.se = se

        def forward(self, x, skip):
            return merge(x * 1.0, skip, se=self.se, act=activation)

    assert_same(Merge(), [x, skip])


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid", "tanh", "relu"])
def test_every_gate_matches_formula(gate):
    unit = Bottleneck(16, 4, se=SEConfig(reduction=4, gate=gate)).double()
    assert_same(unit, [torch.randn(3, 16, 6, 6, dtype=torch.float64)])


@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity", "3x3", None])
@pytest.mark.parametrize("dims, channels_last", DIMS_AND_FORMATS)
@pytest.mark.parametrize("block", [Bottleneck, BasicBlock])
@pytest.mark.parametrize("downsample", [False, True])
def test_residual_unit_matches_formula(position, dims, channels_last, block, downsample):
    conv, norm = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}[dims]
    planes = 8
    out_channels = planes * block.expansion
    in_channels = 16 if downsample else out_channels
    projection = nn.Sequential(conv(in_channels, out_channels, 1, 2, bias=False), norm(out_channels)) if downsample else None
    se = None if position is None else SEConfig(reduction=4, position=position)
    unit = block(in_channels, planes, stride=2 if downsample else 1, downsample=projection, se=se, dims=dims).double()
    for module in unit.modules():  # non-trivial BN affine parameters
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    x = torch.randn((3, in_channels) + (6, 5, 4)[:dims], dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=CHANNELS_LAST[dims])
        unit = unit.to(memory_format=CHANNELS_LAST[dims])
    assert_same(unit, [x])


@pytest.mark.parametrize("name,size", [("se_resnet18", 64), ("se_resnet20", 32), ("se_resnet164", 32), ("resnet18", 64)])
def test_whole_networks_match_formula(name, size):
    # At least 2x2 maps in the last stage: training-mode BN over a batch of two 1x1 maps is so
    # ill-conditioned that it turns float64 rounding differences into 1e-7 (either implementation).
    model = senet.create_model(name, num_classes=5).double()
    assert_same(model, [torch.randn(2, 3, size, size, dtype=torch.float64)], tol=1e-8)
    assert_same(model.eval(), [torch.randn(2, 3, size, size, dtype=torch.float64)], tol=1e-8)


def test_inference_matches_and_leaves_inputs_alone():
    model = senet.create_model("se_resnet18", num_classes=5).eval()
    x = torch.randn(2, 3, 40, 40)
    copy_of_x = x.clone()
    with torch.inference_mode():
        fused = model(x)
        with se_impl(model, "naive"):
            naive = model(x)
    torch.testing.assert_close(fused, naive)
    assert torch.equal(x, copy_of_x)


def test_one_module_one_state_dict():
    """The fast path is an implementation detail: no new parameters, buffers or modules."""
    model = senet.create_model("se_resnet50")
    names = [n for n, _ in senet.create_model("se_resnet50").named_modules()]
    model.set_se_impl("naive")
    assert [n for n, _ in model.named_modules()] == names
    assert sum(p.numel() for p in model.parameters()) == 28_088_024


def test_switch_restores_and_nests():
    """The implementation is per block, shown in its repr; `se_impl` restores each block's own setting."""
    model = senet.create_model("se_resnet20")
    blocks = [m for m in model.modules() if isinstance(m, SqueezeExcitation)]
    assert all(b.impl == "fused" for b in blocks) and "impl=fused" in repr(blocks[0])
    blocks[0].impl = "naive"
    with se_impl(model, "naive"):
        assert all(b.impl == "naive" for b in blocks) and "impl=naive" in repr(blocks[1])
        with se_impl(model, "fused"):
            assert all(b.impl == "fused" for b in blocks)
        assert all(b.impl == "naive" for b in blocks)
    assert [b.impl for b in blocks] == ["naive"] + ["fused"] * (len(blocks) - 1)
    with pytest.raises(RuntimeError), se_impl(model, "naive"):
        raise RuntimeError
    assert [b.impl for b in blocks] == ["naive"] + ["fused"] * (len(blocks) - 1)
    with pytest.raises(senet.errors.ConfigError, match="se implementation"):
        model.set_se_impl("fast")


# --- in-place and memory ----------------------------------------------------------------------------


def _saved_bytes(unit: nn.Module, x: torch.Tensor, fused: bool) -> int:
    """Bytes of distinct storages autograd keeps for one unit's backward, leaving out its parameters."""
    parameters = {p.untyped_storage().data_ptr() for p in unit.parameters()}
    set_se_impl(unit, "fused" if fused else "naive")
    storages = saved_storages(lambda: unit(x))
    return sum(size for ptr, size in storages.items() if ptr not in parameters)


@pytest.mark.parametrize("downsample", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_extra_full_size_activation_is_kept(downsample, dtype):
    """Fused SE keeps what the plain unit keeps plus (N, C) vectors, with an identity or a projection
    shortcut, in float32 and bfloat16; naive keeps one more block-output-sized tensor (the unscaled x)."""
    torch.manual_seed(0)
    x = torch.randn(4, 64, 14, 14, dtype=dtype, requires_grad=True)
    full = x.numel() * x.element_size()
    projection = nn.Sequential(nn.Conv2d(64, 64, 1, bias=False), nn.BatchNorm2d(64)) if downsample else None
    plain = _saved_bytes(Bottleneck(64, 16, downsample=copy.deepcopy(projection)).to(dtype), x, True)
    se_unit = Bottleneck(64, 16, downsample=copy.deepcopy(projection), se=SEConfig()).to(dtype)
    fused, naive = _saved_bytes(se_unit, x, True), _saved_bytes(se_unit, x, False)
    assert fused - plain < full / 20  # pooled input, excitation: (N, C) vectors
    assert naive - fused >= full * 0.95  # (less the few vectors fused keeps instead)


def test_saved_tensor_hooks_are_respected():
    """Under saved-tensor hooks (here: offloading to CPU memory) the fused path does not read saved
    tensors in the forward pass, and the gradients still equal the formula."""
    projection = nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64))
    unit = Bottleneck(32, 16, downsample=projection, se=SEConfig()).double()
    x = torch.randn(2, 32, 6, 6, dtype=torch.float64)
    unpacked = []
    fused = copy.deepcopy(unit)
    leaf = x.clone().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.detach(), lambda t: unpacked.append(t) or t):
        out = fused(leaf)
        assert not unpacked  # nothing was unpacked before the backward pass
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
        (out * weight).sum().backward()
    assert unpacked
    out_naive, grads_naive, _ = _run(unit, [x], False)
    torch.testing.assert_close(out.detach(), out_naive)
    for got, want in zip([leaf.grad] + [p.grad for p in fused.parameters()], grads_naive):
        torch.testing.assert_close(got, want)


# --- hooks, complexity, compilers ----------------------------------------------------------------------


def test_hooks_fire_once_and_see_the_excitation():
    """With the naive implementation (the one for hooks: the fused merge calls no part of the block as a
    module) hooks on the block and its gate fire once, and the block's input is the BN output."""
    model = senet.create_model("se_resnet18", num_classes=5).set_se_impl("naive")
    calls, gates, inputs = [], {}, {}
    for name, module in model.named_modules():
        if isinstance(module, SqueezeExcitation):
            module.register_forward_hook(lambda m, i, o, name=name: (calls.append(name), inputs.__setitem__(name, i[0].clone())) and None)
            module.gate.register_forward_hook(lambda m, i, o, name=name: gates.__setitem__(name, o.detach().clone()))
    residuals = {}
    for name, module in model.named_modules():
        if isinstance(module, BasicBlock):
            module.bn2.register_forward_hook(lambda m, i, o, name=name: residuals.__setitem__(name + ".se", o.detach().clone()))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert sorted(calls) == sorted(n for n, m in model.named_modules() if isinstance(m, SqueezeExcitation))
    for name, module in model.named_modules():
        if isinstance(module, SqueezeExcitation):
            torch.testing.assert_close(inputs[name], residuals[name])  # the hooked block did not overwrite x
            with torch.no_grad():
                torch.testing.assert_close(gates[name], module.excitation(residuals[name]))


def test_complexity_unchanged():
    with torch.device("meta"):
        model = senet.create_model("se_resnet50")
    stats = senet.complexity(model)
    assert stats.params == 28_088_024
    assert round(stats.macs / 1e9, 3) == 3.872


def test_trace_matches():
    model = senet.create_model("se_resnet18", num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    traced = torch.jit.trace(model, x)
    torch.testing.assert_close(traced(x), model(x))


def test_no_graph_breaks_under_torch_compile():
    import torch._dynamo

    for position in ("standard", "identity"):
        model = senet.create_model("se_resnet20", se_position=position)
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 16, 16))
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1


def test_fused_function_itself_traces_without_graph_breaks():
    import torch._dynamo

    def merge_op(x, scale, skip):
        return _op(x, torch.ones(4), torch.zeros(4), scale, skip)

    args = (torch.randn(2, 4, 3, 3, requires_grad=True), torch.rand(2, 4, requires_grad=True), torch.randn(2, 4, 3, 3))
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(merge_op)(*args)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def _bn(kind: str) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(
        16, momentum=None if kind == "cumulative" else 0.1, affine=kind != "no_affine",
        track_running_stats=kind != "no_running_stats",
    ).double()
    if bn.affine:
        nn.init.uniform_(bn.weight, 0.5, 2.0)
        nn.init.uniform_(bn.bias, -1.0, 1.0)
    if bn.track_running_stats:
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn.train(kind != "eval")


@pytest.mark.parametrize("kind", ["train", "eval", "cumulative", "no_running_stats", "no_affine"])
def test_merge_with_the_bn_folded_in_matches_the_formula(kind):
    """merge(c, skip, se=se, norm=bn) (the BN folded in) = relu(se(bn(c)) + skip): outputs, every
    gradient, the BN's running statistics and batch count, over two steps."""
    torch.manual_seed(0)
    se, bn = SqueezeExcitation(16, 4).double(), _bn(kind)
    c = torch.randn(3, 16, 5, 4, dtype=torch.float64) * 2 + 0.5
    skip = torch.randn(3, 16, 5, 4, dtype=torch.float64)
    results = {}
    for folded in (True, False):
        se_, bn_ = copy.deepcopy(se), copy.deepcopy(bn)
        outs = []
        for step in range(2):
            c_, skip_ = (c + step).requires_grad_(), skip.clone().requires_grad_()
            out = merge(c_, skip_, se=se_, norm=bn_, act=nn.ReLU()) if folded else torch.relu(se_(bn_(c_)) + skip_)
            weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
            (out * weight).sum().backward()
            outs += [out.detach(), c_.grad, skip_.grad]
        outs += [p.grad for p in [*se_.parameters(), *bn_.parameters()]] + list(bn_.buffers())
        results[folded] = outs
    assert len(results[True]) == len(results[False])
    for got, want in zip(results[True], results[False]):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_fused_unit_runs_backwards_twice():
    """With retain_graph the fused unit's graph runs backwards again: the gradients double."""
    unit = Bottleneck(16, 4, se=SEConfig(reduction=4)).double()
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64, requires_grad=True)
    out = unit(x).square().sum()
    first = torch.autograd.grad(out, x, retain_graph=True)[0]
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], first)
    assert unit.se.impl == "fused" and first.abs().sum() > 0


@pytest.mark.parametrize("dims", [1, 3])
def test_merge_with_the_bn_folded_in_for_signals_and_volumes(dims):
    """The fold is the same for 1-D and 3-D units (BatchNorm1d / BatchNorm3d), training mode."""
    torch.manual_seed(0)
    se = SqueezeExcitation(8, 4, dims=dims).double()
    bn = {1: nn.BatchNorm1d, 3: nn.BatchNorm3d}[dims](8).double()
    shape = (3, 8) + (5, 4, 3)[:dims]
    c, skip = torch.randn(shape, dtype=torch.float64) + 1, torch.randn(shape, dtype=torch.float64)
    results = {}
    for folded in (True, False):
        se_, bn_ = copy.deepcopy(se), copy.deepcopy(bn)
        c_ = c.clone().requires_grad_()
        out = merge(c_, skip, se=se_, norm=bn_, act=nn.ReLU()) if folded else torch.relu(se_(bn_(c_)) + skip)
        out.square().sum().backward()
        results[folded] = [out.detach(), c_.grad, bn_.running_var, *(p.grad for p in se_.parameters())]
    for got, want in zip(results[True], results[False]):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_merge_with_the_bn_folded_in_under_autocast():
    """Under bf16 autocast (channels_last) the folded merge gives the formula's dtype and values to bf16
    precision; the batch statistics are summed in float32."""
    torch.manual_seed(0)
    se, bn = SqueezeExcitation(16, 4), _bn("train").float()
    c = torch.randn(4, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(4, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    results = {}
    for folded in (True, False):
        se_, bn_ = copy.deepcopy(se), copy.deepcopy(bn)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            c_, skip_ = c.to(torch.bfloat16), skip.to(torch.bfloat16)
            results[folded] = (merge(c_, skip_, se=se_, norm=bn_, act=nn.ReLU()) if folded else torch.relu(se_(bn_(c_)) + skip_), bn_)
    (out, bn_folded), (want, bn_formula) = results[True], results[False]
    assert out.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want.float(), atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(bn_folded.running_var, bn_formula.running_var, atol=1e-3, rtol=1e-3)


def _compiled_calls(module: nn.Module, x: torch.Tensor, name: str) -> int:
    """How many calls of operators whose name contains `name` torch.compile's graph of module(x) holds."""
    import torch._dynamo

    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(module, backend=backend)(x)
    return sum(name in str(node.target) for gm in graphs for node in gm.graph.nodes)


def test_compiling_leaves_the_merge_to_inductor():
    """The op is opaque to Inductor (it cost a compiled SE-ResNet-50 1.23x ResNet-50's training step, 1.03x
    with the formula, docs/speed.md): a compiled graph holds the formula, which Inductor fuses."""
    unit = Bottleneck(32, 8, se=SEConfig(reduction=4))
    assert _compiled_calls(unit, torch.randn(2, 32, 5, 5), "se_merge") == 0


@pytest.mark.parametrize("downsample", [False, True])
def test_compiled_unit_with_the_bn_folded_in_matches_eager(downsample):
    """Through AOTAutograd (torch.compile's autograd, without Inductor's code generation), a training step
    of the folded unit equals the eager formula: output, gradients, running statistics."""
    import torch._dynamo

    torch.manual_seed(0)
    projection = nn.Sequential(nn.Conv2d(32, 32, 1, bias=False), nn.BatchNorm2d(32)) if downsample else None
    unit = Bottleneck(32, 8, downsample=projection, se=SEConfig(reduction=4)).double()
    x = torch.randn(3, 32, 5, 5, dtype=torch.float64)
    eager_out, eager_grads, eager_unit = _run(unit, [x], False)
    torch._dynamo.reset()
    compiled_unit = copy.deepcopy(unit)
    out, grads, compiled_unit = _run(torch.compile(compiled_unit, backend="aot_eager"), [x], True)
    torch.testing.assert_close(out, eager_out)
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want)
    for got, want in zip(compiled_unit.buffers(), eager_unit.buffers()):
        torch.testing.assert_close(got, want)


@pytest.mark.slow
def test_compiled_training_matches_eager():
    model = senet.create_model("se_resnet20", num_classes=5).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    eager_out, eager_grads, _ = _run(model, [x], True)
    compiled_model = copy.deepcopy(model)
    out = torch.compile(compiled_model)(x)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view(out.shape)
    (out * weight).sum().backward()
    torch.testing.assert_close(out, eager_out)
    for got, want in zip((p.grad for p in compiled_model.parameters()), eager_grads[1:]):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("channels_last", [False, True])
def test_squeeze_is_the_mean(channels_last):
    """The fast squeeze (sum, then divide the pooled tensor) is bit-identical to x.mean, forward and backward."""
    x = torch.randn(3, 8, 7, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    pool = senet.layers.GlobalPool("avg")
    results = {}
    for fused in (True, False):
        leaf = x.clone().requires_grad_()
        pooled = pool(leaf) if fused else leaf.mean((2, 3), keepdim=True)
        pooled.backward(torch.arange(24.0).view(3, 8, 1, 1))
        results[fused] = (pooled, leaf.grad)
    assert torch.equal(results[True][0], x.mean((2, 3), keepdim=True))
    assert torch.equal(results[True][0], results[False][0]) and torch.equal(results[True][1], results[False][1])


@pytest.mark.gpu
def test_cuda_runs_the_formula():
    """On a GPU the merge is the formula (the fused op has run on the CPU only): fused and naive agree."""
    model = senet.create_model("se_resnet18", num_classes=5).cuda()
    x = torch.randn(8, 3, 64, 64, device="cuda")
    assert not fused_device(x.device)
    out_fused, grads_fused, _ = _run(model, [x], True)
    out_naive, grads_naive, _ = _run(model, [x], False)
    torch.testing.assert_close(out_fused, out_naive)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_affine_rebuilds_the_bn_output(training):
    """x = c * alpha + beta per channel from the per-(n, c) moments of c (training) or the running
    statistics (eval), and mean is the squeeze of c: what the fused merge folds in."""
    bn = nn.BatchNorm2d(6).double().train(training)
    nn.init.uniform_(bn.weight, 0.5, 2.0)
    nn.init.uniform_(bn.bias, -1.0, 1.0)
    bn.running_mean.uniform_(-1, 1)
    c = torch.randn(3, 6, 5, 4, dtype=torch.float64, requires_grad=True) * 3 + 1
    alpha, beta, mean = batch_norm_affine(c, copy.deepcopy(bn))
    x = bn(c)
    torch.testing.assert_close(c * alpha.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1), x, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(mean, c.mean((2, 3)), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 5, 7), (3, 5, 4, 6), (2, 4, 3, 2, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_sums(shape, dtype, channels_last):
    """The per-(n, c) sums of grad * other and of grad (one BatchNorm-backward pass on contiguous CPU
    tensors, a product and two sums otherwise) equal the direct sums."""
    grad, other = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype) + 1
    if channels_last and len(shape) > 3:
        fmt = CHANNELS_LAST[len(shape) - 2]
        grad, other = grad.contiguous(memory_format=fmt), other.contiguous(memory_format=fmt)
    space = tuple(range(2, len(shape)))
    dot, total = spatial_sums(grad, other)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(dot, (grad.double() * other.double()).sum(space).to(dtype), atol=tol, rtol=tol)
    torch.testing.assert_close(total, grad.double().sum(space).to(dtype), atol=tol, rtol=tol)


@pytest.mark.parametrize("part", ["squeeze", "fc1", "bn", "act", "fc2", "gate"])
def test_a_hook_on_any_part_fires(part):
    """Under the naive implementation every part of the block is called as a module, so a hook on any of
    them fires (the fused merge calls none of them: hooks are what `set_se_impl(model, "naive")` is for)."""
    unit = set_se_impl(Bottleneck(32, 8, se=SEConfig(reduction=4)), "naive")
    calls = []
    getattr(unit.se, part).register_forward_hook(lambda m, i, o: calls.append(o.shape))
    unit(torch.randn(2, 32, 5, 5)).sum().backward()
    assert len(calls) == 1


def test_se_path_says_what_runs_where():
    """Nothing unverified is a default: on CUDA (and under torch.compile) a "fused" block runs the formula
    in plain PyTorch operations; the fused op on the eager CPU only. `senet bench` prints this line."""
    from senet.layers import se_path

    assert se_path("fused", "cpu").startswith("fused: senet::se_merge")
    assert se_path("fused", "cuda").startswith("formula:") and se_path("fused", "cpu", compiled=True).startswith("formula:")
    assert se_path("naive", "cpu").startswith("naive:")
    unit = Bottleneck(16, 4, se=SEConfig(reduction=4))
    assert fuses(torch.empty(8, 16, 256, 256), unit.se, unit.bn3, unit.act3)
    assert fuses(torch.randn(2, 16, 3, 3), unit.se, unit.bn3, unit.act3)
    assert not fuses(torch.randn(2, 16, 3, 3, device="meta"), unit.se, unit.bn3, unit.act3)
