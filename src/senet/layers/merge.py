"""The merge of a residual unit, act(SE(BN(c)) * scale + shortcut) (Sec. 3.2, Eq. 4; Fig. 3), in one place
for every family's units: the one function that decides how the merge runs.

- The formula, every part called as a module (``naive``): what tracing, torch.fx, torch.export, ONNX and
  torch.compile see (Inductor fuses it into its own loops), what runs on GPUs, and what every block set to
  "naive", with no BN to fold or with a squeeze other than the average runs.
- Eager CPU, a block set to "fused" (the default) after a plain BatchNorm, a large tensor: the BN folded in. BN(c) =
  c * alpha + beta per channel and the squeeze of BN(c) is mean(c) * alpha + beta, so one reduction over
  c gives the batch statistics and the squeeze (`batch_norm_affine`), the excitation runs on (N, C), and
  one operator, `senet::se_merge`, writes act((c * alpha + beta) * s + shortcut): the BN output is never
  written, and the op keeps exactly c, alpha, beta, s and the output for its backward, which makes one
  pass for the per-(n, c) sums and one for dL/dc. An SE unit so keeps what its plain twin keeps plus
  (N, C) vectors. docs/speed.md has what this buys.

Only public APIs: `torch.library` for the op, `torch.autograd.Function`, and three ATen operators through
`torch.ops.aten` (`native_group_norm`, `native_batch_norm_backward`, `threshold_backward`), each for the
per-(n, c) reduction or pass it computes in one vectorised CPU kernel.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from senet.errors import check_choice
from senet.layers.nd import BATCHNORMS
from senet.layers.squeeze_excite import SE_IMPLS, SqueezeExcitation


def set_se_impl(module: nn.Module, impl: str) -> nn.Module:
    """Set the SE implementation ("fused" or "naive") of every SE block in `module`; returns `module`."""
    impl = check_choice("se implementation", impl, SE_IMPLS)
    for block in module.modules():
        if isinstance(block, SqueezeExcitation):
            block.impl = impl
    return module


@contextlib.contextmanager
def se_impl(module: nn.Module, impl: str) -> Iterator[nn.Module]:
    """``with se_impl(model, "naive"): model(x)``: `set_se_impl` for the block, each block's own setting
    restored afterwards."""
    previous = {block: block.impl for block in module.modules() if isinstance(block, SqueezeExcitation)}
    set_se_impl(module, impl)
    try:
        yield module
    finally:
        for block, value in previous.items():
            block.impl = value


def fused_device(device: torch.device | str) -> bool:
    """Whether a "fused" block's merge is fused on `device`: on the CPU only (no other device has run it)."""
    return torch.device(device).type == "cpu"


def se_path(impl: str, device: torch.device | str, compiled: bool = False) -> str:
    """What an SE block set to `impl` runs on `device` (eager, or under torch.compile), in words."""
    if impl == "naive":
        return "naive: the formula, every part of the block called as a module"
    if compiled or not fused_device(device):
        return "formula: plain PyTorch operations (the fused op runs on the CPU only, eager)"
    return f"fused: senet::se_merge with the unit's last BN folded in (CPU, tensors of {FUSE_MIN_ELEMENTS} elements or more)"


def _recording(x: Tensor) -> bool:
    """Whether a tracer, torch.fx (x a Proxy), an export or torch.compile is looking: they record the formula's
    plain operations, out of place."""
    return (
        torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or isinstance(x, torch.fx.Proxy)
        or torch.compiler.is_compiling() or torch.compiler.is_exporting()
    )


# ---------------------------------------------------------------------------------------------------
# The BN folded in: per-(n, c) moments of c give the batch statistics and the squeeze.


def _dense(t: Tensor) -> bool:
    """A float32/float64 NC(spatial)-contiguous tensor with space, which BatchNorm's and GroupNorm's CPU
    kernels take viewed per (n, c)."""
    return t.dtype in (torch.float32, torch.float64) and t.is_contiguous() and t.dim() > 2


def _per_channel(t: Tensor, like: Tensor) -> Tensor:
    """(C,) or (N, C) as (1, C, 1, ...) or (N, C, 1, ...) to broadcast against `like`."""
    return t.view((-1 if t.dim() == 2 else 1, like.shape[1]) + (1,) * (like.dim() - 2))


def moments(c: Tensor) -> tuple[Tensor, Tensor]:
    """(variance, mean) of c over space per (n, c), (N, C) each, in float32 at least, in one pass: GroupNorm's
    statistics with one group per channel (several times faster than `torch.var_mean` over space), which
    give 1 / sqrt(var) with eps 0, so var = rstd ** -2."""
    n, channels = c.shape[:2]
    if _dense(c):
        _, mean, rstd = torch.ops.aten.native_group_norm(c, None, None, n, channels, math.prod(c.shape[2:]), channels, 0.0)
        return rstd.pow(-2), mean
    return torch.var_mean(c.to(torch.promote_types(c.dtype, torch.float32)), dim=tuple(range(2, c.dim())), correction=0)


def per_sample_affine(c: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """c * scale + shift, scale and shift (N, C), as a new tensor: BatchNorm's inference kernel on c viewed as
    (1, N * C, *space) with mean 0, variance 1 and eps 0 (one vectorised pass)."""
    n, channels = c.shape[:2]
    scale, shift = scale.to(c.dtype), shift.to(c.dtype)
    if _dense(c):
        flat, zeros, ones = c.view(1, n * channels, -1), c.new_zeros(n * channels), c.new_ones(n * channels)
        return F.batch_norm(flat, zeros, ones, scale.reshape(-1), shift.reshape(-1), False, 0.0, 0.0).view(c.shape)
    return torch.addcmul(_per_channel(shift, c), c, _per_channel(scale, c))


def spatial_sums(grad: Tensor, other: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of grad * other, sum of grad) over space per (n, c), (N, C) each, in float32 at least: both from
    one pass of BatchNorm's backward kernel on (1, N * C, *space) with mean 0 and invstd 1, whose per-channel
    sums of dy * (x - mean) * invstd and of dy are ours."""
    n, c = grad.shape[:2]
    if _dense(grad) and _dense(other) and other.dtype == grad.dtype:
        view, zeros, ones = (1, n * c, *grad.shape[2:]), grad.new_zeros(n * c), grad.new_ones(n * c)
        _, dot, total = torch.ops.aten.native_batch_norm_backward(
            grad.view(view), other.view(view), None, None, None, zeros, ones, True, 0.0, [False, True, True]
        )
        return dot.view(n, c), total.view(n, c)
    grad, space = grad.to(torch.promote_types(grad.dtype, torch.float32)), tuple(range(2, grad.dim()))
    return (grad * other).sum(space), grad.sum(space)


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
        shift = torch.zeros_like(mean) if grad_mean is None else grad_mean / area
        if grad_var is None:  # a broadcast view: nothing full-size written
            return shift.to(c.dtype).view(mean.shape + (1,) * (c.dim() - 2)).expand(c.shape)
        factor = grad_var * (2 / area)
        return per_sample_affine(c, factor, shift - factor * mean)


def foldable(norm: nn.Module | None) -> bool:
    """Whether `norm` can be folded into the merge: a plain BatchNorm (SyncBatchNorm needs every process's
    statistics; subclasses may compute something else)."""
    return type(norm) in BATCHNORMS


def batch_norm_affine(c: Tensor, norm: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor, Tensor]:
    """(alpha, beta, mean) with norm(c) = c * alpha + beta (alpha, beta: (C,)) and mean the spatial mean of c
    per (n, c), (N, C), so that the squeeze of norm(c) is mean * alpha + beta (Eq. 2).

    In training the batch statistics come from the per-(n, c) moments (the variance of the whole is the mean
    of the per-sample variances plus the variance of the per-sample means), in float32 at least, and the
    running statistics and `num_batches_tracked` are updated as `nn.BatchNorm` does; in eval mode the
    running statistics are used.
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
        var_nc, mean_nc = _Moments.apply(c) if torch.is_grad_enabled() and c.requires_grad else moments(c)
        mean = mean_nc.mean(0)
        var = var_nc.mean(0) + (mean_nc - mean).square().mean(0)
        if norm.training and norm.running_mean is not None:
            with torch.no_grad():
                norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
                norm.running_var.lerp_((var * (count / (count - 1))).to(norm.running_var.dtype), factor)
    else:  # the running statistics: only the squeeze is needed from c
        mean_nc = c.sum(tuple(range(2, c.dim())), dtype=acc) / math.prod(c.shape[2:])
        mean, var = norm.running_mean.to(acc), norm.running_var.to(acc)
    alpha = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        alpha = alpha * norm.weight.to(acc)
    beta = -mean * alpha if norm.bias is None else torch.addcmul(norm.bias.to(acc), mean, alpha, value=-1)
    return alpha, beta, mean_nc


# ---------------------------------------------------------------------------------------------------
# The op: out = relu((c * alpha + beta) * s + skip). Declared with define/impl rather than the `custom_op`
# decorator, which imports torch._dynamo on the first call (seconds in every `senet predict`).

torch.library.define("senet::se_merge", "(Tensor c, Tensor alpha, Tensor beta, Tensor s, Tensor skip) -> Tensor")
torch.library.define(
    "senet::se_merge_backward",
    "(Tensor grad_out, Tensor out, Tensor c, Tensor alpha, Tensor s) -> (Tensor, Tensor, Tensor, Tensor)",
)


@torch.library.impl("senet::se_merge", "default")
def _se_merge(c: Tensor, alpha: Tensor, beta: Tensor, s: Tensor, skip: Tensor) -> Tensor:
    """relu((c * alpha + beta) * s + skip): c, skip (N, C, *spatial); alpha, beta (C,); s (N, C)."""
    out = torch.addcmul(skip, c, _per_channel((s * alpha).to(c.dtype), c))
    return out.add_(_per_channel((s * beta).to(out.dtype), c)).relu_()


@torch.library.register_fake("senet::se_merge")
def _se_merge_fake(c, alpha, beta, s, skip):
    return torch.empty_like(c, dtype=torch.promote_types(c.dtype, skip.dtype))


@torch.library.impl("senet::se_merge_backward", "default")
def _se_merge_backward(grad_out: Tensor, out: Tensor, c: Tensor, alpha: Tensor, s: Tensor) -> tuple[Tensor, ...]:
    """(g, the gradient behind the ReLU; dL/dc = g * s * alpha; the sums of g * c and of g per (n, c))."""
    g = torch.ops.aten.threshold_backward(grad_out, out, 0)
    return (g, g * _per_channel((s * alpha).to(g.dtype), g), *spatial_sums(g, c))


@torch.library.register_fake("senet::se_merge_backward")
def _se_merge_backward_fake(grad_out, out, c, alpha, s):
    sums = grad_out.new_empty(s.shape, dtype=torch.promote_types(c.dtype, torch.float32))
    return torch.empty_like(grad_out), torch.empty_like(c), sums, sums.clone()


def _setup_context(ctx, inputs, output) -> None:
    c, alpha, beta, s, _ = inputs
    ctx.save_for_backward(c, alpha, beta, s, output)  # what the backward reads, and nothing else


def _backward(ctx, grad_out: Tensor):
    c, alpha, beta, s, out = ctx.saved_tensors
    g, grad_c, sum_gc, sum_g = torch.ops.senet.se_merge_backward(grad_out, out, c, alpha, s)
    # x = c * alpha + beta is never written: the sum of g * x is sum_gc * alpha + sum_g * beta.
    grad_s = sum_gc * alpha + sum_g * beta
    return grad_c, (sum_gc * s).sum(0), (sum_g * s).sum(0), grad_s.to(s.dtype), g


torch.library.register_autograd("senet::se_merge", _backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------------
# The merge every residual unit calls.


# The fused merge trades passes over the tensors for a few dozen operations on (N, C) vectors, a fixed cost
# per unit: it pays on large tensors (a unit tail of SE-ResNet-50's conv2_x, 8 x 256 x 56 x 56, trains in
# 0.69x the formula's time and keeps one tensor less) and costs on small ones (the demo's 64 x 64 x 4 x 4:
# 1.8x). Below this many elements the merge is the formula (`benchmarks/merge_sizes.py`, docs/speed.md).
FUSE_MIN_ELEMENTS = 2**19


def fuses(x: Tensor, se: nn.Module | None, norm: nn.Module | None, act: Callable[[Tensor], Tensor] | None) -> bool:
    """Whether `merge` runs fused: an eager CPU tensor of `FUSE_MIN_ELEMENTS` or more, a block set to
    "fused" with the average squeeze and no BN of its own, after a plain BatchNorm, followed by a ReLU."""
    return (
        isinstance(se, SqueezeExcitation) and se.impl == "fused" and se.squeeze_mode == "avg"
        and isinstance(se.bn, nn.Identity) and foldable(norm) and type(act) is nn.ReLU
        and not _recording(x) and fused_device(x.device) and x.numel() >= FUSE_MIN_ELEMENTS
    )


def merge(
    x: Tensor,
    skip: Tensor,
    *,
    se: nn.Module | None = None,
    norm: nn.Module | None = None,
    act: Callable[[Tensor], Tensor] | None = None,
    scale: float = 1.0,
    drop_path: nn.Module | None = None,
) -> Tensor:
    """act(drop_path(SE(norm(x)) * scale) + skip): the merge of a residual unit (Eq. 4, Fig. 3).

    x: the residual branch before its last BN (or its output, with `norm` None), (N, C, *spatial); skip:
    the tensor added (the shortcut; the residual for SE on the identity branch); se: the `SqueezeExcitation`
    scaling norm(x), or None; norm: the unit's last BN, folded in on the fused path; act: the unit's
    activation; scale: a constant residual scale (Inception-ResNet's 0.1 .. 0.3); drop_path: a
    `senet.layers.drop.DropPath` on the branch (fused: its per-sample factor folded into s). `x` is
    consumed: its memory may hold the result.
    """
    if fuses(x, se, norm, act):
        se.check_input(x)
        alpha, beta, mean = batch_norm_affine(x, norm)
        s = se.excite(torch.addcmul(beta, mean, alpha).to(se.fc1.weight.dtype))
        if scale != 1.0:
            s = s * scale
        keep = None if drop_path is None else drop_path.sample_scale(x)
        if keep is not None:
            s = s * keep.to(s.dtype).unsqueeze(1)
        return torch.ops.senet.se_merge(x, alpha, beta, s, skip)
    fresh = norm is not None  # a BN output nobody else holds (BN keeps its input, not its output)
    if norm is not None:
        x = norm(x)
    if se is not None:
        x, fresh = se(x), True  # (x * s: the product keeps its inputs, not its output)
    if scale != 1.0:
        x, fresh = x * scale, True
    if drop_path is not None:
        x, fresh = drop_path(x), fresh or (drop_path.training and drop_path.p > 0)
    out = x.add_(skip) if fresh and not _recording(x) else x + skip
    return out if act is None else act(out)
