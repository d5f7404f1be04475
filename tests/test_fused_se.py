"""The fused SE merge (senet.layers.merge): same results as the straightforward formula, forward and
backward, in every integration position, memory format, dimensionality and squeeze; less memory kept;
hooks and complexity counts unchanged; traceable by torch.compile without graph breaks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import senet
from senet.bench import saved_storages
from senet.layers import SEConfig, SqueezeExcitation, merge, se_impl, set_se_impl
from senet.layers.merge import batch_norm_affine
from senet.models.cifar import PreActBottleneck, WideBasic
from senet.models.inception_resnet import block35
from senet.models.resnet import BasicBlock, Bottleneck

CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


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


# --- the autograd function -------------------------------------------------------------------------


def _op(c, alpha, beta, s, skip, relu, keep_skip=False):
    return torch.ops.senet.se_merge(c * 1.0, alpha, beta, s, skip, relu, keep_skip)  # c * 1.0: not a leaf


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("affine", [False, True, "keep_skip"])
@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 3, 2), (2, 2, 2, 2, 2), (3, 3, 2, 2)])
def test_gradcheck(relu, affine, shape):
    """The merge op act((c * alpha + beta) * s + skip), alpha and beta per channel (or none), s per (n, c);
    "keep_skip": no affine, x rebuilt from the output and the shortcut in the backward pass."""
    keep_skip, affine = affine == "keep_skip", affine is True
    c = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    skip = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    s = torch.rand(shape[:2], dtype=torch.float64).add(0.05).requires_grad_()
    alpha = torch.rand(shape[1], dtype=torch.float64).add(0.5).requires_grad_() if affine else None
    beta = torch.randn(shape[1], dtype=torch.float64, requires_grad=True) if affine else None
    inputs = (c, alpha, beta, s, skip)
    assert torch.autograd.gradcheck(lambda *t: _op(*t, relu, keep_skip), inputs)
    view = shape[:2] + (1,) * (len(shape) - 2)
    x = c if alpha is None else c * alpha.view(1, -1, *view[2:]) + beta.view(1, -1, *view[2:])
    reference = x * s.view(view) + skip
    torch.testing.assert_close(_op(*inputs, relu), torch.relu(reference) if relu else reference)


@pytest.mark.parametrize("relu, affine", [(True, True), (False, False), (True, "keep_skip")])
def test_opcheck(relu, affine):
    """PyTorch's own check of a custom operator's registration (`torch.library.opcheck`): the schema (no
    mutation or aliasing it does not declare), the fake implementation's shapes and dtypes against the real
    one, the autograd registration, and AOTAutograd with dynamic shapes; for both ops."""
    keep_skip, affine = affine == "keep_skip", affine is True
    c, skip = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(2, 3, 4, 5, dtype=torch.float64)
    s = torch.rand(2, 3, dtype=torch.float64).add(0.05)
    alpha = torch.rand(3, dtype=torch.float64).add(0.5) if affine else None
    beta = torch.randn(3, dtype=torch.float64) if affine else None
    args = [t if t is None else t.requires_grad_() for t in (c, alpha, beta, s, skip)]
    torch.library.opcheck(torch.ops.senet.se_merge.default, (*args, relu, keep_skip))
    out = torch.ops.senet.se_merge(*args, relu, keep_skip).detach()
    grad = torch.randn_like(out)
    kept = (None, skip) if keep_skip else (c, None)
    backward_args = (grad, out if relu or keep_skip else None, kept[0], alpha, beta, s, relu, kept[1])
    torch.library.opcheck(torch.ops.senet.se_merge_backward.default,
                          tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in backward_args))


def test_gradcheck_channels_last():
    c = torch.randn(2, 3, 3, 2, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    skip = torch.randn(2, 3, 3, 2, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    s = torch.rand(2, 3, dtype=torch.float64).add(0.05).requires_grad_()
    alpha, beta = torch.rand(3, dtype=torch.float64, requires_grad=True), torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: _op(*t, True), (c, alpha, beta, s, skip))


def test_underflowed_sigmoid_gives_finite_gradients():
    """s == 0 (sigmoid of a very negative logit): with the shortcut kept, x cannot be rebuilt there, but
    s'(z) = 0 too."""
    logits = torch.tensor([[-200.0, 0.5]]).view(1, 2, 1, 1).requires_grad_()
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    skip = torch.randn(1, 2, 3, 3).abs().requires_grad_()
    grads = {}
    se = SqueezeExcitation(2, 1)
    for fused in (True, False):
        if fused:
            out = _op(x, None, None, torch.sigmoid(logits).flatten(1), skip, True, True)
        else:
            out = torch.relu(x * torch.sigmoid(logits) + skip)
        grads[fused] = torch.autograd.grad(out.sum(), (logits, x, skip))
    for got, want in zip(grads[True], grads[False]):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want)


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


def test_result_written_into_the_residual():
    """A plain unit's sum is written into its last BN's output (nobody else keeps it)."""
    unit = Bottleneck(32, 8)
    captured = {}
    unit.bn3.register_forward_hook(lambda m, i, o: captured.__setitem__("residual", o.data_ptr()))
    out = unit(torch.randn(2, 32, 5, 5))
    assert out.data_ptr() == captured["residual"]
    out.sum().backward()  # autograd accepted the in-place write


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
    # ... which saved-tensor hooks see, in training: three float32 (N, C) vectors at least (moments, z, s)
    assert fused - plain >= 3 * x.shape[0] * 64 * 4
    assert naive - fused >= full * 0.95  # (less the few vectors fused keeps instead)


# Two units and what follows them in the network (a BN, which keeps its input): each unit's output is kept.
def _preact_pair(se):
    return nn.Sequential(PreActBottleneck(64, 16, se=se), PreActBottleneck(64, 16, se=se), nn.BatchNorm2d(64))


def _wide_pair(se):
    return nn.Sequential(WideBasic(64, 64, se=se), WideBasic(64, 64, se=se), nn.BatchNorm2d(64))


def _inception_resnet_pair(se):
    return nn.Sequential(block35(se), block35(se), nn.BatchNorm2d(320))


@pytest.mark.parametrize("make, channels", [(_preact_pair, 64), (_wide_pair, 64), (_inception_resnet_pair, 320)])
def test_units_without_a_folded_bn_keep_no_extra_activation(make, channels):
    """Units whose SE input is not a BN output (pre-activation CIFAR units, Inception-ResNet) on identity
    shortcuts: fused SE keeps the shortcut (their input, kept anyway) and the output instead of x, so two
    chained units keep what their plain twins keep plus (N, C) vectors; naive keeps x of each unit."""
    torch.manual_seed(0)
    x = torch.randn(4, channels, 8, 8, requires_grad=True)
    full = x.numel() * x.element_size()
    plain = _saved_bytes(make(None), x, True)
    se_units = make(SEConfig())
    fused, naive = _saved_bytes(se_units, x, True), _saved_bytes(se_units, x, False)
    assert fused - plain < full / 10
    assert naive - fused >= full * 1.9  # one x per unit


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
        return _op(x, torch.ones(4), torch.zeros(4), scale, skip, True)

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


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("scale, drop", [(1.0, 0.0), (0.2, 0.5)])
def test_cpu_training_runs_the_tail_as_one_node(relu, gate, scale, drop, monkeypatch):
    """Eager CPU training with the BN folded in takes `_UnitTail` (one autograd node for the unit's tail),
    whose outputs, every gradient (c, the shortcut, the SE and BN parameters), running statistics and
    batch count equal the naive formula in float64 over two steps; inference and eval take the op."""
    from senet.layers.drop import DropPath
    from senet.layers.merge import _UnitTail

    calls = []
    forward = _UnitTail.forward
    monkeypatch.setattr(_UnitTail, "forward", staticmethod(lambda *args: calls.append(1) or forward(*args)))
    torch.manual_seed(0)
    se, bn = SqueezeExcitation(16, 4, gate=gate).double(), _bn("train")
    act = nn.ReLU() if relu else None
    drop_path = DropPath(drop).train() if drop else None
    c = torch.randn(4, 16, 5, 4, dtype=torch.float64) * 2 + 0.5
    skip = torch.randn(4, 16, 5, 4, dtype=torch.float64)
    results = {}
    for impl in ("fused", "naive"):
        se_, bn_ = copy.deepcopy(se), copy.deepcopy(bn)
        se_.impl = impl
        outs = []
        for step in range(2):
            c_, skip_ = (c + step).requires_grad_(), skip.clone().requires_grad_()
            torch.manual_seed(step)
            out = merge(c_, skip_, se=se_, norm=bn_, act=act, scale=scale, drop_path=drop_path)
            weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
            (out * weight).sum().backward()
            outs += [out.detach(), c_.grad, skip_.grad]
        outs += [p.grad for p in [*se_.parameters(), *bn_.parameters()]] + list(bn_.buffers())
        results[impl] = outs
        assert len(calls) == 2  # both fused steps, no naive one
    for got, want in zip(results["fused"], results["naive"], strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    with torch.no_grad():
        merge(c.clone(), skip, se=se, norm=bn, act=act, scale=scale)
    merge(c.clone().requires_grad_(), skip, se=se, norm=bn.eval(), act=act, scale=scale)
    assert len(calls) == 2


def test_one_node_tail_runs_backwards_twice():
    """The tail's (N, C) graph is kept from the forward pass: a second backward pass over a retained outer
    graph gives the same gradients again, and the small graph holds no full-size tensor."""
    torch.manual_seed(0)
    se, bn = SqueezeExcitation(16, 4).double(), _bn("train")
    c = (torch.randn(4, 16, 5, 4, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    skip = torch.randn(4, 16, 5, 4, dtype=torch.float64, requires_grad=True)
    out = merge(c.clone(), skip, se=se, norm=bn, act=nn.ReLU())
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
    (out * weight).sum().backward(retain_graph=True)
    first = [t.grad.clone() for t in (c, skip, *se.parameters(), *bn.parameters())]
    for t in (c, skip, *se.parameters(), *bn.parameters()):
        t.grad = None
    (out * weight).sum().backward()
    for got, want in zip([t.grad for t in (c, skip, *se.parameters(), *bn.parameters())], first, strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


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


def _batch_norm_calls(module: nn.Module, x: torch.Tensor) -> int:
    """How many BatchNorm calls torch.compile's graph of module(x) holds."""
    return _compiled_calls(module, x, "batch_norm")


def test_compiling_for_the_cpu_leaves_the_merge_to_inductor():
    """On the CPU the op has no kernel of its own: opaque to Inductor, it cost a compiled SE-ResNet-50
    1.23x ResNet-50's training step (1.03x with the formula, docs/speed.md). The graph holds the formula."""
    unit = Bottleneck(32, 8, se=SEConfig(reduction=4))
    x = torch.randn(2, 32, 5, 5)
    assert _compiled_calls(unit, x, "se_merge") == 0
    assert _batch_norm_calls(unit, x) == 2  # and bn3 is still folded in


def test_compile_folds_the_last_bn_into_the_merge():
    x = torch.randn(2, 32, 5, 5)
    assert _batch_norm_calls(Bottleneck(32, 8), x) == 3
    unit = Bottleneck(32, 8, se=SEConfig(reduction=4))
    assert _batch_norm_calls(unit, x) == 2  # bn3 folded into the SE merge
    unit.bn3.register_forward_hook(lambda *args: None)
    assert _batch_norm_calls(set_se_impl(unit, "naive"), x) == 3  # (for hooks:) BN called as itself
    assert _batch_norm_calls(set_se_impl(Bottleneck(32, 8, se=SEConfig(reduction=4)), "naive"), x) == 3


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
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_matches_formula(channels_last, monkeypatch):
    """On a GPU: in float32 the fused path (Triton kernels included) is as close to a float64 reference as
    the formula is, outputs and every gradient; under bf16 autocast (x kept, no recompute) they agree to bf16."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # exact fp32 convolutions
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = senet.create_model("se_resnet18", num_classes=5).cuda()
    x = torch.randn(8, 3, 64, 64, device="cuda")
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    def flat(module, inputs, fused):
        out, grads, _ = _run(module, inputs, fused)
        return torch.cat([out.flatten().double()] + [g.flatten().double() for g in grads])

    reference = flat(copy.deepcopy(model).double(), [x.double()], False)
    error = {fused: (flat(model, [x], fused) - reference).norm() / reference.norm() for fused in (True, False)}
    assert error[True] <= 3 * error[False] + 1e-6, error
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out_fused, _, _ = _run(model, [x], True)
        out_naive, _, _ = _run(model, [x], False)
    torch.testing.assert_close(out_fused.float(), out_naive.float(), atol=5e-2, rtol=5e-2)


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
    from senet.layers.merge import spatial_sums

    grad, other = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype) + 1
    if channels_last and len(shape) > 3:
        fmt = CHANNELS_LAST[len(shape) - 2]
        grad, other = grad.contiguous(memory_format=fmt), other.contiguous(memory_format=fmt)
    target = torch.Size(shape[:2] + (1,) * (len(shape) - 2))
    dot, total = spatial_sums(grad, other, target)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(dot, (grad.double() * other.double()).sum_to_size(target).to(dtype), atol=tol, rtol=tol)
    torch.testing.assert_close(total, grad.double().sum_to_size(target).to(dtype), atol=tol, rtol=tol)
    full = spatial_sums(grad, other, torch.Size(shape))[0]  # squeeze "none": nothing to sum
    torch.testing.assert_close(full, grad * other)


@pytest.mark.parametrize("part", ["squeeze", "fc1", "bn", "act", "fc2", "gate"])
def test_a_hook_on_any_part_fires(part):
    """Under the naive implementation every part of the block is called as a module, so a hook on any of
    them fires (the fused merge calls none of them: hooks are what `set_se_impl(model, "naive")` is for)."""
    unit = set_se_impl(Bottleneck(32, 8, se=SEConfig(reduction=4)), "naive")
    calls = []
    getattr(unit.se, part).register_forward_hook(lambda m, i, o: calls.append(o.shape))
    unit(torch.randn(2, 32, 5, 5)).sum().backward()
    assert len(calls) == 1
