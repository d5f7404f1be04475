"""The SE scale fused with the residual sum and its ReLU: ``relu(x * s + skip)`` (Sec. 3.2, Eq. 4).

SE adds 0.26% FLOPs to ResNet-50 but, written as three separate operations (scale, add, ReLU), makes
three passes over the block output, allocates two new block-sized tensors and keeps the unscaled residual
alive for the backward pass. The official release fused "scale + residual add" into one Caffe layer
(Axpy) for this reason. Here:

- forward: one ``torch.addcmul(skip, x, s)`` reads x and the shortcut once and writes the sum into x's
  own memory when autograd allows (in-place: no allocation); the ReLU then runs in place on it. The
  squeeze is a plain reduction in either memory format (`GlobalPool`), with no copies or reshapes.
- backward (a custom autograd function, checked by gradcheck): dL/ds = sum of g * x needs x, which is not
  kept. x is a BN output at the standard position of every residual unit, and that BN keeps its input c
  and batch statistics for its own backward pass: x = c * alpha + beta per channel, so sum(g * x) =
  alpha * sum(g * c) + beta * sum(g) (`bn_recipe`; the GPU kernel rebuilds x in registers). Without such
  a BN, with the sigmoid gate s > 0 and where the ReLU passes a gradient, x = (out - skip) / s from the
  output (the next unit's input) and an identity shortcut (this unit's input), both kept anyway; else x
  is kept.
- the squeeze and the merge of one block share a `MergeLink`: the merge's backward hands its gradient g
  to the squeeze's backward, which writes dL/dx = g * s + dL/dz / HW in one pass, instead of the merge
  writing g * s and autograd then adding the squeeze's broadcast gradient to it in another.
- on a GPU the merge, its backward and that last pass are Triton kernels (`senet.layers.triton_se`):
  PyTorch's broadcasting kernels are generic, strided ones, and several of them per block made SE cost
  40% of a ResNet-50 training step on an H100 (bf16, channels_last).
- torch.compile sees the merge with the BN before it folded in (`folded_batch_norm`): BN(c) = c * alpha +
  beta per channel, and the squeeze of BN(c) is alpha * mean(c) + beta, so one reduction over c (per
  (n, c) moments) gives both the batch statistics and the squeeze, and the merge is one pass over c and
  the shortcut, relu(c * s alpha + s beta + skip). The BN output is never written, and the block output is
  read no more often than in the plain unit. Inductor fuses this (and its backward) itself.
- TorchScript, tracing and ONNX export see the straightforward formula, which exporters understand.

`fast_se(False)` switches every SE block (and the plain residual sum) back to the straightforward formula
``x * s``, then ``+ skip``, then the activation: same modules, same state dict, same results.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from senet.layers import triton_se

_fast_se = True

# Producers that do not keep their own output for their backward pass: writing the merged result into the
# residual's memory is then invisible to autograd (anything else gets a fresh output tensor), and a
# shortcut they produce (a projection shortcut) is kept by nobody else.
_OUTPUT_FREE_PRODUCERS = frozenset(
    {
        "NativeBatchNormBackward0",
        "CudnnBatchNormBackward0",
        "MiopenBatchNormBackward0",
        "NativeGroupNormBackward0",
        "NativeLayerNormBackward0",
        "ConvolutionBackward0",
        "AddBackward0",
        "SubBackward0",
        "ConstantPadNdBackward0",
    }
)


def fast_se_enabled() -> bool:
    """Whether SE blocks use the fused path (default) or the straightforward formula."""
    return _fast_se


def set_fast_se(enabled: bool) -> None:
    """Switch every SE block between the fused path (True) and the straightforward formula (False)."""
    global _fast_se
    _fast_se = bool(enabled)


@contextlib.contextmanager
def fast_se(enabled: bool = True) -> Iterator[None]:
    """Context manager: ``with senet.layers.fast_se(False): model(x)`` runs the straightforward SE formula."""
    previous = _fast_se
    set_fast_se(enabled)
    try:
        yield
    finally:
        set_fast_se(previous)


def _straightforward() -> bool:
    """True where the formula must be written as plain operations: the switch is off, or a compiler,
    tracer or exporter is looking (they fuse or export plain ops, not Python autograd functions)."""
    if torch.jit.is_scripting():
        return True
    if not _fast_se or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    symbolic = torch.fx._symbolic_trace
    return getattr(symbolic, "is_fx_symbolic_tracing", symbolic.is_fx_tracing)()


def _exporting() -> bool:
    exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.onnx.is_in_onnx_export() or (exporting is not None and exporting())


def hooked(*modules: nn.Module) -> bool:
    """Whether any forward, forward-pre, backward or backward-pre hook watches one of `modules`."""
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks for m in modules
    )


def folds_batch_norm(norm: nn.Module) -> bool:
    """Whether the merge after `norm` is compiled with `norm` folded in (`folded_batch_norm`): a compiler
    (not an exporter) is tracing, the fast path is on, and `norm` is a plain, unhooked BatchNorm."""
    if not (_fast_se and torch.compiler.is_compiling()) or _exporting():
        return False
    if type(norm) not in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        return False  # (SyncBatchNorm needs statistics from every process; subclasses may differ)
    return not hooked(norm)


def folded_batch_norm(c: Tensor, norm: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor, Tensor]:
    """(alpha, beta, mean) with norm(c) = c * alpha + beta (alpha, beta: one value per channel) and mean
    the spatial mean of c per (n, c), so that the squeeze of norm(c) is mean * alpha + beta (Eq. 2).

    The batch statistics come from per-(n, c) moments of c (one reduction, which also gives the squeeze),
    combined over the batch exactly (the variance of the whole is the mean of the per-sample variances
    plus the variance of the per-sample means), in float32 at least. Running statistics and
    `num_batches_tracked` are updated as `nn.BatchNorm` does; in eval mode the running statistics are used.
    """
    acc = torch.promote_types(c.dtype, torch.float32)
    space = tuple(range(2, c.dim()))
    factor = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:  # a cumulative moving average
            factor = 1.0 / float(norm.num_batches_tracked)
    if norm.training or norm.running_mean is None:
        count = c.numel() // c.shape[1]
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(c.shape)}")
        var_nc, mean_nc = torch.var_mean(c.to(acc), dim=space, correction=0)
        mean = mean_nc.mean(0)
        var = var_nc.mean(0) + (mean_nc - mean).square().mean(0)
        if norm.training and norm.running_mean is not None:
            with torch.no_grad():
                norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
                norm.running_var.lerp_((var * (count / (count - 1))).to(norm.running_var.dtype), factor)
    else:  # the running statistics: only the squeeze is needed from c
        mean_nc = c.mean(space, dtype=acc)
        mean, var = norm.running_mean.to(acc), norm.running_var.to(acc)
    alpha = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        alpha = alpha * norm.weight.to(acc)
    beta = -mean * alpha
    if norm.bias is not None:
        beta = beta + norm.bias.to(acc)
    return alpha, beta, mean_nc


def fusable_relu(act: Callable[[Tensor], Tensor] | None) -> bool:
    """Whether `act` is a plain ReLU module that can be fused (a hooked one is called as itself)."""
    return type(act) is nn.ReLU and not act._forward_hooks and not act._forward_pre_hooks


def can_overwrite(x: Tensor) -> bool:
    """Whether the merged result may be written into x's memory without autograd noticing."""
    if x._base is not None:
        return False  # a view: writing it would change another tensor
    if torch.is_grad_enabled() and x.requires_grad:
        return _output_free(x)
    return not (x.is_leaf and x.requires_grad)


def _output_free(t: Tensor) -> bool:
    """Whether t's producer does not keep t for its backward pass."""
    return t.grad_fn is not None and type(t.grad_fn).__name__ in _OUTPUT_FREE_PRODUCERS


class MergeLink:
    """What the merge's backward leaves for the squeeze's backward of the same SE block: the gradient g
    behind the merge's ReLU and the scale s, so that dL/dx = g * s + dL/dz / HW is written in one pass.

    Only for a block whose squeeze output feeds nothing but its own excitation and merge (no hooks): then
    the squeeze's backward always runs after the merge's, and it is the one that produces dL/dx.
    """

    __slots__ = ("grad", "scale")

    def __init__(self) -> None:
        self.grad: Tensor | None = None
        self.scale: Tensor | None = None


class _SqueezeAvg(torch.autograd.Function):
    """z = mean of x over space, whose backward also adds in the merge's share of dL/dx (see MergeLink)."""

    @staticmethod
    def forward(ctx, x: Tensor, link: MergeLink | None, dtype: torch.dtype | None):
        ctx.area, ctx.shape, ctx.dtype, ctx.link = math.prod(x.shape[2:]), x.shape, x.dtype, link
        return x.mean(tuple(range(2, x.dim())), keepdim=True, dtype=dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z: Tensor):
        link = ctx.link
        if link is None or link.grad is None:
            grad = (grad_z / ctx.area).to(ctx.dtype)
            return grad.expand(ctx.shape), None, None  # a broadcast view: nothing full-size is written
        g, scale = link.grad, link.scale
        link.grad = link.scale = None
        if triton_se.supported(g, scale=scale):
            return triton_se.scale_shift(g, scale, grad_z, relu=False, shift_factor=1 / ctx.area), None, None
        return torch.addcmul((grad_z / ctx.area).to(g.dtype), g, scale.to(g.dtype)), None, None


def squeeze_avg(x: Tensor, link: MergeLink | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """Global average pooling keeping dims (the squeeze, Eq. 2), sharing `link` with the block's merge;
    `dtype` is the result's (the mean is accumulated in it)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return x.mean(tuple(range(2, x.dim())), keepdim=True, dtype=dtype)  # no backward: the plain mean
    return _SqueezeAvg.apply(x, link, dtype)


def _saved_tensor_hooks_active() -> bool:
    """Whether `torch.autograd.graph.saved_tensors_hooks` (offloading, checkpointing, ...) are in force."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top is None or top(False) is not None


# The autograd nodes of a training-mode BatchNorm (PyTorch's own kernel, cuDNN, MIOpen): each keeps the
# input, the batch mean and 1 / std as `_saved_input`, `_saved_result1` and `_saved_result2`.
_BN_NODES = frozenset({"NativeBatchNormBackward0", "CudnnBatchNormBackward0", "MiopenBatchNormBackward0"})
_recipe_checked: dict[tuple[str, str], bool] = {}


def _recipe_holds(node: str, x: Tensor, c: Tensor, alpha: Tensor, beta: Tensor) -> bool:
    """Whether c * alpha + beta rebuilds x, checked on one sample at the first use of each BN node type on
    each device type (a wrong reading of undocumented saved tensors would give a silently wrong dL/ds)."""
    key = (node, x.device.type)
    if key not in _recipe_checked:
        if x.is_cuda and torch.cuda.is_current_stream_capturing():
            return False  # (no synchronising check inside a CUDA graph capture: keep x there)
        with torch.no_grad():
            sample = x[:1].float()
            error = (c[:1].float() * alpha.float() + beta.float() - sample).abs().max()
            tolerance = (1e-2 if x.element_size() < 4 else 1e-4) * (1 + sample.abs().max())
            _recipe_checked[key] = bool(error <= tolerance)
    return _recipe_checked[key]


def bn_recipe(x: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """(c, alpha, beta) with x = c * alpha + beta per channel, when x is the output of a training-mode
    BatchNorm: c is the BN's input and alpha, beta come from its batch statistics and affine weights, all
    of which the BN keeps for its own backward pass anyway. None when x came from anything else."""
    fn = x.grad_fn
    node = type(fn).__name__
    if node not in _BN_NODES or x.numel() == 0 or _saved_tensor_hooks_active():
        return None  # (reading the BN's saved tensors would run the hooks' unpack, e.g. bring back offloads)
    try:  # the node's saved tensors are an implementation detail of PyTorch: if they move, keep x
        if not fn._saved_training:
            return None
        weight, bias_node = fn._saved_weight, fn.next_functions[2][0]
        c = fn._saved_input
        mean, invstd = fn._saved_result1, fn._saved_result2
    except (AttributeError, IndexError, RuntimeError):
        return None
    bias = getattr(bias_node, "variable", None)
    if weight is None or bias is None or c.shape != x.shape or c.dtype != x.dtype:
        return None
    shape = (1, -1) + (1,) * (x.dim() - 2)
    alpha = (invstd.to(weight.dtype) * weight).detach().view(shape)
    beta = (bias - mean.to(weight.dtype) * alpha.view(-1)).detach().view(shape)
    return (c, alpha, beta) if _recipe_holds(node, x, c, alpha, beta) else None


class _ScaleAddReLU(torch.autograd.Function):
    """out = relu?(x * scale + skip). For dL/ds it keeps (out, skip, scale) when `recompute` (x = (out -
    skip) / s), (out, c, scale, alpha, beta) given a BN `recipe` (x = c * alpha + beta), else (out, x, scale)."""

    @staticmethod
    def forward(
        ctx, x: Tensor, scale: Tensor, skip: Tensor, relu: bool, overwrite: bool, recompute: bool,
        link: MergeLink | None = None, recipe: tuple[Tensor, Tensor, Tensor] | None = None,
        kernels: bool = False,
    ):
        out = _merge(x, scale, skip, relu, overwrite, kernels)
        if overwrite:
            ctx.mark_dirty(x)
            out = x  # (the same tensor; returned as itself for torch.compile's sake)
        ctx.relu = relu
        ctx.recompute = recompute
        ctx.link = link
        ctx.bn = recipe is not None
        if recipe is not None:
            ctx.save_for_backward(out, recipe[0], scale, recipe[1], recipe[2])
        else:
            ctx.save_for_backward(out, skip if recompute else x, scale)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        out, kept, scale, *affine = ctx.saved_tensors
        link = ctx.link if ctx.needs_input_grad[0] and ctx.needs_input_grad[1] else None
        if triton_se.supported(out, kept, scale=scale) and ctx.needs_input_grad[1]:
            grad_x_here = ctx.needs_input_grad[0] and link is None
            grad, grad_x, grad_scale = triton_se.merge_backward(
                grad_out, out, kept, scale, relu=ctx.relu, recompute=ctx.recompute, grad_x=grad_x_here,
                affine=tuple(affine) if ctx.bn else None,
            )
            if link is not None:
                link.grad, link.scale = grad, scale  # the squeeze's backward writes dL/dx
            grad_skip = grad if ctx.needs_input_grad[2] else None
            return grad_x, grad_scale, grad_skip, None, None, None, None, None, None
        grad = torch.ops.aten.threshold_backward(grad_out, out, 0) if ctx.relu else grad_out
        if link is not None:
            link.grad, link.scale = grad, scale
            grad_x = None
        else:
            grad_x = grad * scale.to(grad.dtype) if ctx.needs_input_grad[0] else None
        grad_scale = None
        if ctx.needs_input_grad[1]:
            # dL/ds = sum of grad * x over the axes s is broadcast along (its spatial axes).
            if ctx.recompute:
                # x = (out - skip) / s wherever grad != 0 (there the ReLU passed, so out = x * s + skip);
                # the division is done on the summed (N, C, 1, ...) tensor. s == 0 only where the sigmoid
                # underflowed, and its derivative s(1 - s) is 0 there as well.
                grad_scale = torch.sub(out, kept).mul_(grad).sum_to_size(scale.shape)
                grad_scale = grad_scale.div_(scale).masked_fill_(scale == 0, 0)
            elif ctx.bn:
                # x = c * alpha + beta, so sum(grad * x) = alpha * sum(grad * c) + beta * sum(grad): x is
                # never materialised.
                alpha, beta = affine
                sum_gc, sum_g = spatial_sums(grad, kept, scale.shape)
                grad_scale = (sum_gc * alpha + sum_g * beta).to(scale.dtype)
            else:
                grad_scale = spatial_sums(grad, kept, scale.shape)[0].to(scale.dtype)
        grad_skip = grad if ctx.needs_input_grad[2] else None
        return grad_x, grad_scale, grad_skip, None, None, None, None, None, None


def spatial_sums(grad: Tensor, other: Tensor, shape: torch.Size) -> tuple[Tensor, Tensor]:
    """(sum of grad * other, sum of grad) summed to `shape` (the scale's: per (n, c) as (N, C, 1, ...), or
    any shape grad sums to), in float32 at least.

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


def _merge(x: Tensor, scale: Tensor, skip: Tensor, relu: bool, overwrite: bool, kernels: bool) -> Tensor:
    """relu?(x * scale + skip) in one pass, into x's memory when `overwrite`; with the Triton kernel when
    `kernels` (`triton_se.supported(x, skip, scale=scale)`)."""
    if kernels:
        return triton_se.scale_shift(x, scale, skip, relu=relu, out=x if overwrite else None)
    scale = scale.to(x.dtype)
    out = torch.addcmul(skip, x, scale, out=x) if overwrite else torch.addcmul(skip, x, scale)
    return out.relu_() if relu else out


def scale_add_act(
    x: Tensor,
    scale: Tensor | None,
    skip: Tensor,
    act: Callable[[Tensor], Tensor] | None = None,
    *,
    inplace: bool = False,
    recompute: bool = False,
    link: MergeLink | None = None,
) -> Tensor:
    """act(x * scale + skip): the merge of a residual unit with SE (scale None: the plain sum act(x + skip)).

    Args:
        x: the tensor to scale, (N, C, *spatial).
        scale: the excitation s, broadcastable to x, or None for a unit without SE.
        skip: the tensor added (the shortcut, or the residual for SE on the identity branch).
        act: the unit's activation; a plain ``nn.ReLU`` is fused, anything else is called on the sum.
        inplace: x is the caller's intermediate: without autograd the result may be written into its
            memory; with autograd only where x then need not be kept (rebuilt from its BN, or recomputed).
        recompute: the gate is a sigmoid (s > 0), so x can be recomputed as (out - skip) / s in the
            backward pass instead of being kept (float32/float64 only; half precision keeps x).
        link: shared with the squeeze that produced `scale` from x (`squeeze_avg`), which then writes
            dL/dx in its backward.
    """
    if _straightforward():
        out = x if scale is None else x * scale
        out = out + skip
        return out if act is None else act(out)
    relu = fusable_relu(act)
    if not relu:
        recompute = False  # the output is only ours to keep when it is final (ReLU fused)
    if scale is None:
        out = x.add_(skip) if inplace and can_overwrite(x) else x + skip
        return out.relu_() if relu else (out if act is None else act(out))
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad or skip.requires_grad)
    overwrite = inplace and can_overwrite(x)
    if x.dtype not in (torch.float32, torch.float64):
        recompute = False  # (out - skip) / s cancels too much in 8-bit mantissas: keep x
    if _output_free(skip):
        # A projection shortcut (BN output) is kept by nobody else: keeping it instead of x saves no
        # memory and recomputing costs a pass, so keep x (or the BN recipe below).
        recompute = False
    kernels = triton_se.supported(x, skip, scale=scale)
    if not needs_grad:
        out = _merge(x, scale, skip, relu, overwrite, kernels)
    else:
        # x is a BN output: rebuild it from what the BN keeps, exactly and for any unit, gate and precision
        # (cheaper than (out - skip) / s, too).
        recipe = bn_recipe(x) if inplace else None
        keep_x_free = inplace and recompute and recipe is None
        out = _ScaleAddReLU.apply(
            x, scale, skip, relu, overwrite and (keep_x_free or recipe is not None), keep_x_free, link, recipe,
            kernels,
        )
    return out if relu or act is None else act(out)
