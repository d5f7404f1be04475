"""The SE scale fused with the residual sum and its ReLU: ``relu(x * s + skip)`` (Sec. 3.2, Eq. 4).

SE adds 0.26% FLOPs to ResNet-50 but, written as three separate operations (scale, add, ReLU), makes
three passes over the block output, allocates two new block-sized tensors and keeps the unscaled residual
alive for the backward pass. The official release fused "scale + residual add" into one Caffe layer
(Axpy) for this reason. Here:

- forward: one ``torch.addcmul(skip, x, s)`` reads x and the shortcut once and writes the sum into x's
  own memory when autograd allows (in-place: no allocation); the ReLU then runs in place on it. The
  squeeze is a plain reduction in either memory format (`GlobalPool`), with no copies or reshapes.
- backward (a custom autograd function, checked by gradcheck): dL/ds needs x, which is not kept. With
  the sigmoid gate s > 0, and where the ReLU passes a gradient the output equals ``x * s + skip``, so
  x = (out - skip) / s is recomputed from the output (kept anyway: the next unit's input) and the
  shortcut (kept anyway when it is the identity: this unit's input). So an identity unit keeps nothing
  block-sized for SE. A projection unit keeps x: neither x nor the projected shortcut is kept by anyone
  else, and one of them is needed.
- torch.compile, TorchScript, tracing and ONNX export see the straightforward formula, which Inductor
  fuses by itself (and whose saved tensors its partitioner chooses) and exporters understand.

`fast_se(False)` switches every SE block (and the plain residual sum) back to the straightforward formula
``x * s``, then ``+ skip``, then the activation: same modules, same state dict, same results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

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


class _ScaleAddReLU(torch.autograd.Function):
    """out = relu?(x * scale + skip); keeps (out, skip, scale) when `recompute`, else (out, x, scale)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, skip: Tensor, relu: bool, overwrite: bool, recompute: bool):
        if overwrite:
            torch.addcmul(skip, x, scale, out=x)
            ctx.mark_dirty(x)
            out = x
        else:
            out = torch.addcmul(skip, x, scale)
        if relu:
            out.relu_()
        ctx.relu = relu
        ctx.recompute = recompute
        ctx.save_for_backward(out, skip if recompute else x, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        out, kept, scale = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad_out, out, 0) if ctx.relu else grad_out
        grad_x = grad * scale if ctx.needs_input_grad[0] else None
        grad_scale = None
        if ctx.needs_input_grad[1]:
            # dL/ds = sum of grad * x over the axes s is broadcast along (its spatial axes).
            if ctx.recompute:
                # x = (out - skip) / s wherever grad != 0 (there the ReLU passed, so out = x * s + skip);
                # the division is done on the summed (N, C, 1, ...) tensor. s == 0 only where the sigmoid
                # underflowed, and its derivative s(1 - s) is 0 there as well.
                grad_scale = torch.sub(out, kept).mul_(grad).sum_to_size(scale.shape)
                grad_scale = grad_scale.div_(scale).masked_fill_(scale == 0, 0)
            else:
                grad_scale = (grad * kept).sum_to_size(scale.shape)
        grad_skip = grad if ctx.needs_input_grad[2] else None
        return grad_x, grad_scale, grad_skip, None, None, None


def scale_add_act(
    x: Tensor,
    scale: Tensor | None,
    skip: Tensor,
    act: Callable[[Tensor], Tensor] | None = None,
    *,
    inplace: bool = False,
    recompute: bool = False,
) -> Tensor:
    """act(x * scale + skip): the merge of a residual unit with SE (scale None: the plain sum act(x + skip)).

    Args:
        x: the tensor to scale, (N, C, *spatial).
        scale: the excitation s, broadcastable to x, or None for a unit without SE.
        skip: the tensor added (the shortcut, or the residual for SE on the identity branch).
        act: the unit's activation; a plain ``nn.ReLU`` is fused, anything else is called on the sum.
        inplace: x is the caller's intermediate: the result may be written into its memory and, with
            `recompute`, x is not kept for the backward pass.
        recompute: the gate is a sigmoid (s > 0), so x can be recomputed as (out - skip) / s in the
            backward pass instead of being kept (float32/float64 only; half precision keeps x).
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
        # memory and recomputing costs a pass, so keep x.
        recompute = False
    if not needs_grad:
        out = torch.addcmul(skip, x, scale, out=x) if overwrite else torch.addcmul(skip, x, scale)
        out = out.relu_() if relu else out
    else:
        keep_x_free = inplace and recompute
        out = _ScaleAddReLU.apply(x, scale, skip, relu, overwrite and keep_x_free, keep_x_free)
    return out if relu or act is None else act(out)
