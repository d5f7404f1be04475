"""The merge of a residual unit, act(x * s + shortcut) with the unit's last BN folded in (Sec. 3.2, Eq. 4;
Fig. 3), in one place for every family's units.

SE adds 0.26% FLOPs to ResNet-50, but written as separate operations (BN, squeeze, scale, add, ReLU) its
merge makes several passes over the block output and keeps the unscaled BN output for the backward pass.
The official release fused "scale + residual add" into one Caffe layer (Axpy) for this reason. Here the
unit's last BatchNorm is folded into the merge: BN(c) = c * alpha + beta per channel, and the squeeze of
BN(c) is mean(c) * alpha + beta, so

- forward: one reduction over c gives the per-(n, c) moments, hence both BN's batch statistics and the
  squeeze z (`batch_norm_affine`); the excitation s = F_ex(z) runs on (N, C) vectors (`excite`); one pass
  over c and the shortcut writes act((c * alpha + beta) * s + shortcut). The BN output is never written.
- backward: one operator (`senet::se_merge`, defined with `torch.library`) keeps exactly the BN input
  c, the per-channel affine (alpha, beta), the excitation s and, for a fused ReLU, its output; one pass
  gives the gradient behind the ReLU (dL/dshortcut) and the per-(n, c) sums of g * c and of g, from which
  dL/ds, dL/dalpha and dL/dbeta follow, and one pass writes dL/dc. The moments' own backward adds one pass.
  An SE unit so keeps what the plain unit keeps (the BN input, the output) plus (N, C) vectors. A unit with
  no BN to fold (pre-activation units, Inception-ResNet) on an identity shortcut keeps the shortcut (its
  input, kept anyway) and the output instead of x, and rebuilds x * s = out - skip (`skip_kept`).
- on a GPU the op's forward and backward are Triton kernels (`senet.layers.triton_se`, AFFINE mode),
  registered as the ops' CUDA kernels with `torch.library`, so dispatch goes by device; on the CPU
  PyTorch operations (the sums from one BatchNorm-backward pass, `spatial_sums`). On a GPU the op
  is one node for torch.compile (its fake implementation gives the shapes); compiling for the CPU, where
  the op has no kernel of its own, the merge is the formula, which Inductor fuses into its loops.
- eager CPU training of a unit whose last BN is folded in (`_UnitTail`): the whole tail is one autograd
  node instead of three (the moments, the excitation, the op), so that dL/dc is written once (two passes:
  g * A + D, then + c * B) instead of twice and summed; the (N, C) graph of the batch statistics and the
  excitation, recorded in the forward pass, runs backwards (`torch.autograd.grad`) between the sums and
  that write (docs/speed.md has what each measured). On a GPU the op and its Triton kernels stay
  (there the moments' term is still a second write; folding it into the kernel is unmeasured work).
- TorchScript, tracing, FX and ONNX export see the straightforward formula (`plain_ops`).

Only public APIs: `torch.library` for the op, `torch.autograd.Function`, `torch.nn.functional`, and three
ATen operators called through the public operator namespace `torch.ops.aten` (`native_group_norm`, of the
Core ATen opset; `native_batch_norm_backward`; `threshold_backward`), each for the per-(n, c) reduction or
pass it computes in one vectorised kernel. No autograd internals (grad_fn, saved tensors of other nodes).

Which one runs is a property of each SE block (`SqueezeExcitation.impl`, set for a whole model with
`set_se_impl`): ``"fused"`` (default) or ``"naive"``, the straightforward formula ``x * s``, ``+ skip``,
``act`` with every part of the block called as a module (so hooks on them fire; the fused path calls
none of them). Both give the same results and the same state dict.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from senet.errors import check_choice
from senet.layers import triton_se
from senet.layers.nd import BATCHNORMS

from senet.options import SE_IMPLS


def plain_ops(x: Tensor) -> bool:
    """True where the merge of x must be written as plain operations: TorchScript, tracing, FX symbolic
    tracing (x a Proxy) or an export is looking (they script, trace or export plain ops, not custom ops)."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    return torch.compiler.is_exporting() or isinstance(x, torch.fx.Proxy)


def set_se_impl(module: nn.Module, impl: str) -> nn.Module:
    """Set the SE implementation ("fused" or "naive") of every SE block in `module`; returns `module`."""
    from senet.layers.squeeze_excite import SqueezeExcitation

    impl = check_choice("se implementation", impl, SE_IMPLS)
    for block in module.modules():
        if isinstance(block, SqueezeExcitation):
            block.impl = impl
    return module


@contextlib.contextmanager
def se_impl(module: nn.Module, impl: str) -> Iterator[nn.Module]:
    """``with se_impl(model, "naive"): model(x)``: `set_se_impl` for the block, each SE block's own setting
    restored afterwards."""
    from senet.layers.squeeze_excite import SqueezeExcitation

    previous = {block: block.impl for block in module.modules() if isinstance(block, SqueezeExcitation)}
    set_se_impl(module, impl)
    try:
        yield module
    finally:
        for block, value in previous.items():
            block.impl = value


# ---------------------------------------------------------------------------------------------------
# The BN folded in: per-(n, c) moments of c give the batch statistics and the squeeze.


def _space(t: Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.dim()))


def _cpu_dense(t: Tensor) -> bool:
    """An eager CPU float32/float64 NC(spatial)-contiguous tensor with space, which PyTorch's BatchNorm and
    GroupNorm CPU kernels take viewed per (n, c) (under torch.compile and tracers, plain operations)."""
    return (
        t.device.type == "cpu" and not torch.compiler.is_compiling() and t.dtype in (torch.float32, torch.float64)
        and t.is_contiguous() and t.dim() > 2
    )


def moments(c: Tensor) -> tuple[Tensor, Tensor]:
    """(variance, mean) of c over space per (n, c), (N, C) each, in float32 at least, in one pass.

    On the CPU, GroupNorm's statistics with one group per channel: its groups are our (n, c) pairs (one
    vectorised pass; several times faster than `torch.var_mean` over space, twice BatchNorm's statistics
    kernel on c viewed as (1, N * C, *space)). It gives 1 / sqrt(var), eps 0, so var = rstd ** -2 (0 where
    c is constant: rstd is infinite there).
    """
    n, channels = c.shape[:2]
    if _cpu_dense(c):
        _, mean, rstd = torch.ops.aten.native_group_norm(c, None, None, n, channels, math.prod(c.shape[2:]), channels, 0.0)
        return rstd.pow(-2), mean
    return torch.var_mean(c.to(torch.promote_types(c.dtype, torch.float32)), dim=_space(c), correction=0)


def per_sample_affine(c: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """c * scale + shift with scale and shift per (n, c), (N, C) each, as a new tensor.

    On the CPU, BatchNorm's inference kernel on c viewed as (1, N * C, *space) with mean 0, variance 1 and
    eps 0 (so 1 / sqrt(var + eps) is exactly 1): its channels are our (n, c) pairs, its weight and bias
    our scale and shift (one vectorised pass; faster than `addcmul` with broadcast operands)."""
    n, channels = c.shape[:2]
    scale, shift = scale.to(c.dtype), shift.to(c.dtype)
    if _cpu_dense(c):
        flat = c.view(1, n * channels, -1)
        zeros, ones = c.new_zeros(n * channels), c.new_ones(n * channels)
        out = F.batch_norm(flat, zeros, ones, scale.reshape(-1), shift.reshape(-1), False, 0.0, 0.0)
        return out.view(c.shape)
    return torch.addcmul(_per_channel_view(shift, c), c, _per_channel_view(scale, c))


class _Moments(torch.autograd.Function):
    """`moments` of c, whose backward writes dL/dc = (dL/dmean + 2 dL/dvar (c - mean)) / HW in one pass."""

    @staticmethod
    def forward(ctx, c: Tensor) -> tuple[Tensor, Tensor]:
        var, mean = moments(c)
        ctx.save_for_backward(c, mean)
        return var, mean

    @staticmethod
    def backward(ctx, grad_var: Tensor | None, grad_mean: Tensor | None) -> Tensor:
        c, mean = ctx.saved_tensors
        area = math.prod(c.shape[2:])
        view = mean.shape + (1,) * (c.dim() - 2)
        shift = torch.zeros_like(mean) if grad_mean is None else grad_mean / area
        if grad_var is None:
            return shift.to(c.dtype).view(view).expand(c.shape)  # a broadcast view: nothing full-size written
        factor = grad_var * (2 / area)
        return per_sample_affine(c, factor, shift - factor * mean)


def foldable(norm: nn.Module | None) -> bool:
    """Whether `norm` can be folded into the merge: a plain BatchNorm (SyncBatchNorm needs every process's
    statistics; subclasses may compute something else)."""
    return type(norm) in BATCHNORMS


def batch_statistics(var_nc: Tensor, mean_nc: Tensor) -> tuple[Tensor, Tensor]:
    """The batch's (mean, variance) per channel, (C,) each, from the per-(n, c) moments, exactly: the
    variance of the whole is the mean of the per-sample variances plus the variance of the per-sample means."""
    mean = mean_nc.mean(0)
    return mean, var_nc.mean(0) + (mean_nc - mean).square().mean(0)


def fold(
    mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """(alpha, beta) with BN(c) = c * alpha + beta per channel, given the statistics the BN normalises with,
    its affine weight and bias (or stand-ins for them) and eps, in the statistics' precision."""
    alpha = torch.rsqrt(var + eps)
    if weight is not None:
        alpha = alpha * weight.to(var.dtype)
    if bias is None:
        return alpha, -mean * alpha
    return alpha, torch.addcmul(bias.to(var.dtype), mean, alpha, value=-1)


def batch_norm_affine(
    c: Tensor,
    norm: nn.modules.batchnorm._BatchNorm,
    stats: tuple[Tensor, Tensor] | None = None,
    affine: tuple[Tensor | None, Tensor | None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(alpha, beta, mean) with norm(c) = c * alpha + beta (alpha, beta: (C,)) and mean the spatial mean of
    c per (n, c), (N, C), so that the squeeze of norm(c) is mean * alpha + beta (Eq. 2).

    The batch statistics come from per-(n, c) moments of c (one reduction, which also gives the squeeze;
    `stats`: those (variance, mean), already computed), combined over the batch (`batch_statistics`), in
    float32 at least. Running statistics and `num_batches_tracked` are updated as `nn.BatchNorm` does; in
    eval mode the running statistics are used. `affine`: tensors standing in for the BN's weight and bias.
    """
    acc = torch.promote_types(c.dtype, torch.float32)
    factor = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:  # a cumulative moving average
            factor = 1.0 / float(norm.num_batches_tracked)
    if norm.training or norm.running_mean is None:
        count = c.numel() // c.shape[1]
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(c.shape)}")
        if stats is not None:
            var_nc, mean_nc = stats
        elif torch.is_grad_enabled() and c.requires_grad:
            var_nc, mean_nc = _Moments.apply(c)
        else:
            var_nc, mean_nc = moments(c)
        mean, var = batch_statistics(var_nc, mean_nc)
        if norm.training and norm.running_mean is not None:
            with torch.no_grad():
                norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
                norm.running_var.lerp_((var * (count / (count - 1))).to(norm.running_var.dtype), factor)
    else:  # the running statistics: only the squeeze is needed from c
        mean_nc = c.sum(_space(c), dtype=acc) / math.prod(c.shape[2:])  # (sum's backward: a broadcast view)
        mean, var = norm.running_mean.to(acc), norm.running_var.to(acc)
    weight, bias = (norm.weight, norm.bias) if affine is None else affine
    return (*fold(mean, var, weight, bias, norm.eps), mean_nc)


def _autocast_off(t: Tensor) -> contextlib.AbstractContextManager:
    """Autocast switched off for t's device where it is on (else a no-op)."""
    device = t.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


def _linear(se: nn.Module, name: str, weights: Mapping[str, Tensor] | None) -> tuple[Tensor, Tensor | None]:
    """(weight as a matrix, bias) of the block's 1x1 convolution `name`, from `weights` where given."""
    if weights is None:
        conv = getattr(se, name)
        return conv.weight.flatten(1), conv.bias
    return weights[f"{name}.weight"].flatten(1), weights.get(f"{name}.bias")


def _call(se: nn.Module, name: str, weights: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
    """The block's part `name` (act, gate) on x; one with parameters of its own takes them from `weights`
    where given (`torch.func.functional_call`)."""
    module = getattr(se, name)
    prefix = f"{name}."
    own = {} if weights is None else {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    return torch.func.functional_call(module, own, (x,)) if own else module(x)


def excite(se: nn.Module, z: Tensor, weights: Mapping[str, Tensor] | None = None) -> Tensor:
    """s = F_ex(z) (Eq. 3) from the pooled (N, C) vector z: the block's fc1, act, fc2 and gate as `F.linear`
    on (N, C) in the FCs' own precision, autocast off (the same weights as its 1x1 convolutions; a few
    tiny kernels instead of convolutions and weight casts, which matters where SE's cost is launches).
    `weights`: tensors standing in for the block's parameters, by their names in `se.named_parameters()`."""
    (w1, b1), (w2, b2) = _linear(se, "fc1", weights), _linear(se, "fc2", weights)
    with _autocast_off(z):
        hidden = _call(se, "act", weights, F.linear(z.to(w1.dtype), w1, b1))
        return _call(se, "gate", weights, F.linear(hidden, w2, b2))


def _gates(
    se: nn.Module, z: Tensor, scale: float, keep: Tensor | None, weights: Mapping[str, Tensor] | None = None
) -> Tensor:
    """The (N, C) factors s of the merge: F_ex(z) (Eq. 3) times the residual scale and, with a drop path,
    sample n's factor keep[n] (dropping its branch x * s is scaling its row of s by 0, else by 1 / keep)."""
    s = excite(se, z, weights)
    if scale != 1.0:
        s = s * scale
    if keep is not None:
        s = s * keep.to(s.dtype).unsqueeze(1)
    return s


def fusable(se: nn.Module) -> bool:
    """Whether block `se` takes the fused merge: set to "fused", average squeeze, no BN inside the excitation."""
    return se.impl == "fused" and se.squeeze_mode == "avg" and isinstance(se.bn, nn.Identity)


# ---------------------------------------------------------------------------------------------------
# The op: out = act((c * alpha + beta) * s + skip), alpha and beta optional (then x = c).


def _per_channel_view(t: Tensor, like: Tensor) -> Tensor:
    """(C,) or (N, C) as (1, C, 1, ...) or (N, C, 1, ...) to broadcast against `like`."""
    return t.view((-1 if t.dim() == 2 else 1, like.shape[1]) + (1,) * (like.dim() - 2))


def _kernels(c: Tensor, skip: Tensor, s: Tensor) -> bool:
    return triton_se.supported(c, skip, scale=s.view(s.shape + (1,) * (c.dim() - 2)))


def _merge_formula(c: Tensor, alpha: Tensor | None, beta: Tensor | None, s: Tensor, skip: Tensor, relu: bool) -> Tensor:
    scale = s if alpha is None else s * alpha
    out = torch.addcmul(skip, c, _per_channel_view(scale.to(c.dtype), c))
    if beta is not None:
        out = out.add_(_per_channel_view((s * beta).to(out.dtype), c))
    return out.relu_() if relu else out


# The two ops are declared with torch.library's define/impl/register_fake/register_autograd rather than the
# `custom_op` decorator, which guards each kernel with a lazy import of torch._dynamo: 1.5-3 s on the first
# call in every process that runs an SE model (`senet predict`, `senet eval`); what dispatch and
# torch.compile see is the same operator.
torch.library.define(
    "senet::se_merge",
    "(Tensor c, Tensor? alpha, Tensor? beta, Tensor s, Tensor skip, bool relu, bool keep_skip) -> Tensor",
)
torch.library.define(
    "senet::se_merge_backward",
    "(Tensor grad_out, Tensor? out, Tensor? c, Tensor? alpha, Tensor? beta, Tensor s, bool relu, Tensor? skip)"
    " -> (Tensor, Tensor, Tensor, Tensor)",
)


def _se_merge(
    c: Tensor, alpha: Tensor | None, beta: Tensor | None, s: Tensor, skip: Tensor, relu: bool, keep_skip: bool
) -> Tensor:
    """act((c * alpha + beta) * s + skip): c, skip (N, C, *spatial); alpha, beta (C,) or None; s (N, C).
    `keep_skip` (no alpha; s > 0): the backward keeps skip and the output instead of c (see `merge`).
    PyTorch operations on every device; on CUDA the Triton kernels (`_se_merge_kernels`, registered for
    the device below)."""
    return _merge_formula(c, alpha, beta, s, skip, relu)


def _se_merge_kernels(
    c: Tensor, alpha: Tensor | None, beta: Tensor | None, s: Tensor, skip: Tensor, relu: bool, keep_skip: bool
) -> Tensor:
    """`senet::se_merge` as one Triton kernel (AFFINE mode where alpha is given) where the kernels take the
    tensors (`triton_se.supported`: dtype, layout, size), else PyTorch operations."""
    if _kernels(c, skip, s):
        affine = None if alpha is None else (alpha, beta)
        return triton_se.scale_shift(c, _per_channel_view(s, c), skip, relu=relu, affine=affine)
    return _merge_formula(c, alpha, beta, s, skip, relu)


@torch.library.register_fake("senet::se_merge")
def _se_merge_fake(c, alpha, beta, s, skip, relu, keep_skip):
    return torch.empty_like(c, dtype=torch.promote_types(c.dtype, skip.dtype))


def spatial_sums(grad: Tensor, other: Tensor, shape: torch.Size) -> tuple[Tensor, Tensor]:
    """(sum of grad * other, sum of grad) summed to `shape` (per (n, c) as (N, C, 1, ...), or any shape grad
    sums to), in float32 at least.

    On the CPU, for contiguous float32/float64 tensors, both come from one pass: BatchNorm's backward
    kernel computes, per channel, sum(dy * (x - mean) * invstd) and sum(dy); viewing (N, C, *space) as
    (1, N * C, *space), with mean 0 and invstd 1, its channels are our (n, c) pairs and those are our sums.
    Elsewhere a product and two reductions (the GPU path has its own kernel, `triton_se.merge_backward`).
    """
    n, c = grad.shape[:2]
    if (
        grad.device.type == "cpu"
        and grad.dtype in (torch.float32, torch.float64)
        and other.dtype == grad.dtype
        and grad.is_contiguous()
        and other.is_contiguous()
        and other.shape == grad.shape
        and tuple(shape) == (n, c) + (1,) * (grad.dim() - 2)
    ):
        view = (1, n * c, *grad.shape[2:])
        zeros, ones = grad.new_zeros(n * c), grad.new_ones(n * c)
        _, dot, total = torch.ops.aten.native_batch_norm_backward(
            grad.view(view), other.view(view), None, None, None, zeros, ones, True, 0.0, [False, True, True]
        )
        return dot.view(shape), total.view(shape)
    acc = torch.promote_types(grad.dtype, torch.float32)  # half precision sums in float32
    grad = grad.to(acc)
    return torch.mul(grad, other).sum_to_size(shape), grad.sum_to_size(shape)


def _backward_formula(grad_out, out, c, alpha, s, relu, skip):
    g = torch.ops.aten.threshold_backward(grad_out, out, 0) if relu else grad_out
    scale = s if alpha is None else s * alpha
    grad_c = g * _per_channel_view(scale.to(g.dtype), g)
    if skip is None:
        sum_gc, sum_g = spatial_sums(g, c, s.shape + (1,) * (g.dim() - 2))
        return (g if relu else g.new_empty(0)), grad_c, sum_gc.flatten(1), sum_g.flatten(1)
    # c = x was not kept: x * s = out - skip wherever g is not zero (behind the ReLU, out > 0), so the sum
    # of g * x is the sum of g * (out - skip), divided by s (s = 0 only where the sigmoid underflowed or
    # a drop path dropped the sample, and there the gradient reaching the gate, s (1 - s) or 0, is 0 too).
    sum_gd, sum_g = spatial_sums(g, out - skip, s.shape + (1,) * (g.dim() - 2))
    tiny = torch.finfo(s.dtype).tiny
    return (g if relu else g.new_empty(0)), grad_c, sum_gd.flatten(1) / s.clamp_min(tiny), sum_g.flatten(1)


def _se_merge_backward(
    grad_out: Tensor, out: Tensor | None, c: Tensor | None, alpha: Tensor | None, beta: Tensor | None, s: Tensor,
    relu: bool, skip: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(g behind the ReLU (empty without one: g is grad_out), dL/dc, sum of g * c, sum of g) per (n, c).
    c is None where skip is given instead (then x = c is rebuilt as (out - skip) / s). PyTorch operations
    on every device; on CUDA the Triton kernels (`_se_merge_backward_kernels`, registered below)."""
    return _backward_formula(grad_out, out, c, alpha, s, relu, skip)


def _se_merge_backward_kernels(
    grad_out: Tensor, out: Tensor | None, c: Tensor | None, alpha: Tensor | None, beta: Tensor | None, s: Tensor,
    relu: bool, skip: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`senet::se_merge_backward` as one Triton kernel where the kernels take the tensors, else PyTorch
    operations."""
    kept = c if skip is None else skip
    if relu and _kernels(kept, out, s) and triton_se.supported(grad_out):
        return _backward_kernels(grad_out, out, c, alpha, beta, s, skip)
    return _backward_formula(grad_out, out, c, alpha, s, relu, skip)


def _backward_kernels(grad_out, out, c, alpha, beta, s, skip):
    scale = _per_channel_view(s, out)
    if skip is not None:  # x rebuilt from the shortcut: the kernels' recompute mode
        g, grad_c, sum_gc = triton_se.merge_backward(grad_out, out, skip, scale, relu=True, recompute=True, grad_x=True)
        return g, grad_c, sum_gc.flatten(1).float(), g.new_empty(0)
    if alpha is None:  # x = c is kept: dL/ds = sum of g * x
        g, grad_c, sum_gc = triton_se.merge_backward(grad_out, out, c, scale, relu=True, recompute=False, grad_x=True)
        return g, grad_c, sum_gc.flatten(1).float(), g.new_empty(0)
    g, grad_c, _, sum_gc, sum_g = triton_se.merge_backward(
        grad_out, out, c, scale, relu=True, recompute=False, grad_x=True, affine=(alpha, beta), sums=True
    )
    return g, grad_c, sum_gc.flatten(1), sum_g.flatten(1)


@torch.library.register_fake("senet::se_merge_backward")
def _se_merge_backward_fake(grad_out, out, c, alpha, beta, s, relu, skip):
    like = c if skip is None else skip
    acc = torch.promote_types(like.dtype, torch.float32)
    sums = grad_out.new_empty(s.shape, dtype=acc)
    return (torch.empty_like(grad_out) if relu else grad_out.new_empty(0)), torch.empty_like(like), sums, sums.clone()


def _setup_context(ctx, inputs, output) -> None:
    c, alpha, beta, s, skip, relu, keep_skip = inputs
    ctx.relu = relu
    if keep_skip:  # the output and the shortcut (which autograd keeps anyway) instead of c
        ctx.save_for_backward(None, None, None, s, output, skip)
    else:
        ctx.save_for_backward(c, alpha, beta, s, output if relu else None, None)


def _affine_grads(sum_gc: Tensor, sum_g: Tensor, alpha: Tensor, beta: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dL/ds, dL/dalpha, dL/dbeta) of x * s with x = c * alpha + beta, from the per-(n, c) sums of g * c
    and of g: the sum of g * x is sum_gc * alpha + sum_g * beta, x never materialised."""
    return sum_gc * alpha + sum_g * beta, (sum_gc * s).sum(0), (sum_g * s).sum(0)


def _backward(ctx, grad_out: Tensor):
    c, alpha, beta, s, out, skip = ctx.saved_tensors
    g, grad_c, sum_gc, sum_g = torch.ops.senet.se_merge_backward(grad_out, out, c, alpha, beta, s, ctx.relu, skip)
    if not ctx.relu:
        g = grad_out
    grad_alpha = grad_beta = None
    if alpha is None:
        grad_s = sum_gc
    else:
        grad_s, grad_alpha, grad_beta = _affine_grads(sum_gc, sum_g, alpha, beta, s)
    needs = ctx.needs_input_grad
    return (
        grad_c if needs[0] else None,
        grad_alpha if needs[1] else None,
        grad_beta if needs[2] else None,
        grad_s.to(s.dtype) if needs[3] else None,
        g if needs[4] else None,
        None,
        None,
    )


torch.library.register_autograd("senet::se_merge", _backward, setup_context=_setup_context)

# Dispatch by device: PyTorch operations on every device ("default"), and the Triton kernels as CUDA's
# implementation of both ops. Under Triton's interpreter (TRITON_INTERPRET=1, set before senet is imported:
# how `make test-kernels` tests the kernels without a GPU) they are the CPU's too.
torch.library.impl("senet::se_merge", "default", _se_merge)
torch.library.impl("senet::se_merge_backward", "default", _se_merge_backward)
for _device in ("cuda", "cpu") if triton_se.INTERPRETING else ("cuda",):
    torch.library.impl("senet::se_merge", _device, _se_merge_kernels)
    torch.library.impl("senet::se_merge_backward", _device, _se_merge_backward_kernels)
del _device


# ---------------------------------------------------------------------------------------------------
# Eager CPU training with the BN folded in: the unit's tail as one autograd node.


def _unpack(t: Tensor) -> Tensor:
    return t


class _UnitTail(torch.autograd.Function):
    """act((c * alpha + beta) * s + skip) from the BN input c, the BN's batch statistics folded in (Sec. 3.2,
    Eq. 2-4), as one autograd node (eager CPU training, `_one_node`).

    As three nodes (the moments, the excitation, the op) autograd writes dL/dc twice, the op's
    g * s * alpha and the moments' c * factor + shift, and adds them. Here the forward pass records the
    (N, C) part (batch statistics, alpha, beta, z, s as functions of the per-(n, c) moments and the
    parameters, detached) as a graph of its own; the backward pass computes the per-(n, c) sums, runs that
    graph backwards with `torch.autograd.grad`, and writes in two passes

        dL/dc = g * A + c * B + D,  A = s * alpha,  B = 2 dL/dvar_nc / HW,  D = dL/dmean_nc / HW - B * mean_nc

    (the moments' backward (dL/dmean_nc + 2 dL/dvar_nc (c - mean_nc)) / HW, all per (n, c)). The small
    graph keeps its tensors itself (saved-tensor hooks of its own): under checkpointing
    (`set_grad_checkpointing`) they are not the checkpoint's to drop and recompute in the backward pass's
    nested graph task. The node saves them too (`save_for_backward`, the same storages), so that hooks
    outside see all it keeps: c, the output (for the ReLU) and (N, C) vectors, what the plain unit keeps
    plus (N, C) vectors.
    """

    @staticmethod
    def forward(
        ctx, c: Tensor, skip: Tensor, keep: Tensor | None, weight: Tensor | None, bias: Tensor | None,
        norm: nn.modules.batchnorm._BatchNorm, se: nn.Module, names: tuple[str, ...], scale: float, relu: bool,
        *se_params: Tensor,
    ) -> Tensor:
        leaves = [None if t is None else t.detach().requires_grad_() for t in (*moments(c), weight, bias, *se_params)]
        var_nc, mean_nc, weight, bias, *se_params = leaves
        kept: list[Tensor] = []

        def pack(t: Tensor) -> Tensor:  # detached: a node saving its own output would hold itself (a cycle)
            kept.append(t.detach())
            return kept[-1]

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
            alpha, beta, _ = batch_norm_affine(c, norm, (var_nc, mean_nc), (weight, bias))
            s = _gates(se, torch.addcmul(beta, mean_nc, alpha), scale, keep, dict(zip(names, se_params)))
        out = _merge_formula(c, alpha, beta, s, skip, relu)
        ctx.graph = alpha, beta, s, leaves
        ctx.relu = relu
        # What the small graph keeps is saved here too (the same storages): saved-tensor hooks outside the
        # unit (`senet.bench.saved_storages`, offloading) see every tensor the unit keeps.
        ctx.save_for_backward(c, out if relu else None, var_nc.detach(), mean_nc.detach(), *kept)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        c, out, _, mean_nc = ctx.saved_tensors[:4]  # (the moments' variance: counted, not read)
        alpha, beta, s, leaves = ctx.graph
        g = torch.ops.aten.threshold_backward(grad_out, out, 0) if ctx.relu else grad_out
        sum_gc, sum_g = (t.flatten(1) for t in spatial_sums(g, c, mean_nc.shape + (1,) * (c.dim() - 2)))
        grad_s, grad_alpha, grad_beta = _affine_grads(sum_gc, sum_g, alpha.detach(), beta.detach(), s.detach())
        grads = iter(torch.autograd.grad(
            (s, alpha, beta),
            [t for t in leaves if t is not None],
            (grad_s.to(s.dtype), grad_alpha.to(alpha.dtype), grad_beta.to(beta.dtype)),
            allow_unused=True,
            retain_graph=True,  # the outer graph may be run backwards again (retain_graph there)
        ))
        grad_var, grad_mean, grad_weight, grad_bias, *grad_se = (None if t is None else next(grads) for t in leaves)
        grad_c = None
        if ctx.needs_input_grad[0]:
            area = math.prod(c.shape[2:])
            b = grad_var * (2 / area)
            grad_c = per_sample_affine(g, (s * alpha).detach(), grad_mean / area - b * mean_nc)
            grad_c.addcmul_(c, _per_channel_view(b.to(c.dtype), c))
        grad_skip = g if ctx.needs_input_grad[1] else None
        return grad_c, grad_skip, None, grad_weight, grad_bias, None, None, None, None, None, *grad_se


def _one_node(
    x: Tensor, skip: Tensor, se: nn.Module, norm: nn.Module | None, act: Callable[[Tensor], Tensor] | None
) -> bool:
    """Whether `merge` runs as `_UnitTail`: eager CPU training of a foldable BN (batch statistics), a ReLU
    or no activation, something to differentiate. Elsewhere (GPUs, inference, compilers, and the CPU under
    Triton's interpreter, where the kernels are tested) the op."""
    return (
        foldable(norm) and norm.training and (act is None or fusable_relu(act)) and _cpu_dense(x)
        and torch.is_grad_enabled() and not triton_se.supported(x, skip)
        and (x.requires_grad or skip.requires_grad or any(p.requires_grad for m in (se, norm) for p in m.parameters()))
    )


# ---------------------------------------------------------------------------------------------------
# The merge every residual unit calls.


def fusable_relu(act: Callable[[Tensor], Tensor] | None) -> bool:
    """Whether `act` is a plain ReLU module, which the merge fuses."""
    return type(act) is nn.ReLU


def merge(
    x: Tensor,
    skip: Tensor,
    *,
    se: nn.Module | None = None,
    norm: nn.Module | None = None,
    act: Callable[[Tensor], Tensor] | None = None,
    scale: float = 1.0,
    drop_path: nn.Module | None = None,
    skip_kept: bool = False,
) -> Tensor:
    """act(drop_path(SE(norm(x)) * scale) + skip): the merge of a residual unit (Eq. 4, Fig. 3).

    Args:
        x: the residual branch before its last BN (or its output, with `norm` None), (N, C, *spatial).
        skip: the tensor added (the shortcut; the residual for SE on the identity branch).
        se: the SE block scaling norm(x) (a `SqueezeExcitation`), or None for a unit without SE.
        norm: the unit's last BN, folded into the merge on the fused path (see the module docstring).
        act: the unit's activation (a plain `nn.ReLU` is fused).
        scale: a constant residual scale (Inception-ResNet's 0.1 .. 0.3).
        drop_path: a `senet.layers.drop.DropPath` on the branch (stochastic depth); on the fused path
            its per-sample factor (0 or 1 / keep) is folded into s, the same as dropping the branch.
        skip_kept: `skip` is a tensor autograd keeps anyway (the unit's input, on an identity shortcut).
            Then, with no BN to fold, a sigmoid gate (s > 0) and a ReLU or no activation, the fused merge
            keeps the shortcut and its output instead of x and rebuilds x * s = out - skip in the backward
            pass: such a unit keeps what its plain twin keeps plus (N, C) vectors, as a unit with a BN.

    `x` is consumed: its memory may hold the result.
    """
    if se is None or not fusable(se) or plain_ops(x):
        fresh = norm is not None  # a BN output nobody else holds (BN keeps its input, not its output)
        if norm is not None:
            x = norm(x)
        if se is not None:
            x, fresh = se(x), False  # x * s (a hook on the block may hold its output)
        if scale != 1.0:
            x, fresh = x * scale, True
        if drop_path is not None and drop_path.training and drop_path.p > 0:
            x, fresh = drop_path(x), True
        out = x.add_(skip) if fresh and not plain_ops(x) else x + skip
        return out if act is None else act(out)
    se.check_input(x)
    keep = None if drop_path is None else drop_path.sample_scale(x)
    relu = fusable_relu(act)
    if _one_node(x, skip, se, norm, act):
        names, params = zip(*se.named_parameters())
        return _UnitTail.apply(x, skip, keep, norm.weight, norm.bias, norm, se, names, scale, relu, *params)
    alpha = beta = None
    if norm is not None and foldable(norm):
        alpha, beta, mean = batch_norm_affine(x, norm)
        z = mean * alpha + beta
    else:
        if norm is not None:
            x = norm(x)
        z = x.sum(_space(x), dtype=torch.promote_types(x.dtype, torch.float32)) / math.prod(x.shape[2:])
    s = _gates(se, z, scale, keep)
    keep_skip = skip_kept and alpha is None and (relu or act is None) and isinstance(se.gate, nn.Sigmoid)
    if torch.compiler.is_compiling() and x.device.type == "cpu":
        # Inductor fuses the formula with its neighbours into one loop over the tensors, forward and
        # backward; the op would be opaque to it, three eager passes and layout copies around them.
        out = _merge_formula(x, alpha, beta, s, skip, relu)
    else:
        out = torch.ops.senet.se_merge(x, alpha, beta, s, skip, relu, keep_skip)
    return out if relu or act is None else act(out)
