"""Triton kernels for the SE merge on GPU: one pass over memory for each step of Eq. 4 and its gradient.

On a GPU, SE's cost is memory traffic, not FLOPs: PyTorch's broadcasting kernels for ``x * s + skip`` and
its backward are generic (strided, not vectorised) and each makes a full pass over the block output. Here:

- `scale_shift`: ``act(x * s + b)`` with s per (n, c) and b either a full tensor (the shortcut: the merge
  forward, the release's Axpy layer) or per (n, c) (the squeeze's gradient dL/dz / HW: the backward of x);
  one read of each full operand and one write, in place when asked.
- `merge_backward`: from dL/dout, the output and x in one pass: the gradient g behind the ReLU
  (dL/dskip), optionally dL/dx = g * s, and dL/ds = sum over space of g * x, reduced per (n, c) in float32
  without atomics (one program owns a block of channels of one sample). x need not be kept: it is rebuilt
  in registers from the BN input c (AFFINE: x = c * alpha + beta per channel; then dL/dc = g * s * alpha
  and the per-(n, c) sums of g * c and of g come out too, for the gradients of alpha and beta), or
  recomputed from the output and the shortcut.

Both read (N, C, *spatial) tensors in either memory format (NCHW-contiguous or channels_last), all
operands in the same one. `supported` says when the kernels apply; the caller (the `senet::se_merge` op of
`senet.layers.merge`, registered for CUDA, in AFFINE mode) falls back to PyTorch operations otherwise.
A model set to ``set_se_impl("naive")`` never calls them.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

try:  # Triton comes with PyTorch's CUDA wheels; CPU-only installs run without it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# Triton's interpreter runs the kernels on CPU tensors (TRITON_INTERPRET=1): how they are tested without a GPU.
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


def available() -> bool:
    """Whether the kernels can run at all (Triton importable)."""
    return triton is not None


def channels_last_of(t: Tensor) -> bool | None:
    """False if t is (N, C, S...)-contiguous, True if channels-last contiguous, None if neither."""
    if t.is_contiguous():
        return False
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return True
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return True
    return None


def _memory_format(t: Tensor, channels_last: bool) -> torch.memory_format:
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if t.dim() == 4 else torch.channels_last_3d


def _dense_in(t: Tensor, channels_last: bool) -> bool:
    return t.is_contiguous(memory_format=_memory_format(t, channels_last))


def supported(x: Tensor, *others: Tensor, scale: Tensor | None = None) -> bool:
    """Whether the kernels apply: a GPU tensor (N, C, *spatial) of 1-3 spatial dims in a float type, every
    full-size operand of the same shape, dtype and memory format, and the scale one value per (n, c)."""
    if not available() or not (x.is_cuda or INTERPRETING):
        return False
    if scale is not None and (scale.dim() != x.dim() or scale.numel() != x.shape[0] * x.shape[1]):
        return False
    if x.dim() not in (3, 4, 5) or x.dtype not in _DTYPES or x.numel() == 0 or x.numel() >= 2**31:
        return False
    layout = channels_last_of(x)
    if layout is None:
        return False
    return all(o.shape == x.shape and o.dtype == x.dtype and o.device == x.device and _dense_in(o, layout) for o in others)


def _per_channel(t: Tensor, n: int, c: int) -> Tensor:
    """An (N, C, 1, ...) tensor as a contiguous (N, C) one."""
    return t.reshape(n, c).contiguous()


def _tiles(channels: int, spatial: int, channels_last: bool) -> tuple[int, int]:
    """Tile (space, channels) of a program: 16-byte rows along the contiguous axis."""
    if channels_last:
        block_c = min(128, triton.next_power_of_2(channels))
        return max(1, 4096 // block_c), block_c
    block_s = min(256, triton.next_power_of_2(spatial))
    return block_s, max(1, 2048 // block_s)


if triton is not None:

    @triton.jit
    def _offsets(n, s, c, C, S, CHANNELS_LAST: tl.constexpr):
        # s: (BS, 1) spatial positions, c: (1, BC) channels -> element offsets of sample n.
        if CHANNELS_LAST:
            return n * S * C + s * C + c
        return n * C * S + c * S + s

    @triton.jit
    def _scale_shift_kernel(
        x_ptr, s_ptr, b_ptr, alpha_ptr, beta_ptr, out_ptr, C, S, b_factor,
        B_FULL: tl.constexpr, AFFINE: tl.constexpr, RELU: tl.constexpr, CHANNELS_LAST: tl.constexpr,
        BS: tl.constexpr, BC: tl.constexpr,
    ):
        # grid: (N * cdiv(S, BS), cdiv(C, BC)); out = act(x * s + b * b_factor) on one (space, channel) tile,
        # with x = c * alpha + beta per channel rebuilt from the BN input c under AFFINE.
        pid = tl.program_id(0)
        blocks_s = tl.cdiv(S, BS)
        n = pid // blocks_s
        s = (pid % blocks_s) * BS + tl.arange(0, BS)[:, None]
        c = tl.program_id(1) * BC + tl.arange(0, BC)[None, :]
        mask = (s < S) & (c < C)
        offsets = _offsets(n, s, c, C, S, CHANNELS_LAST)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if AFFINE:
            alpha = tl.load(alpha_ptr + c, mask=c < C, other=0.0).to(tl.float32)
            beta = tl.load(beta_ptr + c, mask=c < C, other=0.0).to(tl.float32)
            x = x * alpha + beta
        scale = tl.load(s_ptr + n * C + c, mask=c < C, other=0.0).to(tl.float32)
        if B_FULL:
            b = tl.load(b_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        else:
            b = tl.load(b_ptr + n * C + c, mask=c < C, other=0.0).to(tl.float32) * b_factor
        y = x * scale + b
        if RELU:
            y = tl.maximum(y, 0.0)
        tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _merge_backward_kernel(
        grad_out_ptr, out_ptr, kept_ptr, s_ptr, alpha_ptr, beta_ptr, g_ptr, grad_x_ptr, ds_ptr, sum_gc_ptr, sum_g_ptr,
        C, S,
        RELU: tl.constexpr, RECOMPUTE: tl.constexpr, AFFINE: tl.constexpr, WRITE_GRAD_X: tl.constexpr,
        CHANNELS_LAST: tl.constexpr, BS: tl.constexpr, BC: tl.constexpr,
    ):
        # grid: (N, cdiv(C, BC)); each program walks all of space for its channels, so dL/ds needs no atomics.
        n = tl.program_id(0)
        c = tl.program_id(1) * BC + tl.arange(0, BC)[None, :]
        cmask = c < C
        scale = tl.load(s_ptr + n * C + c, mask=cmask, other=1.0).to(tl.float32)
        if AFFINE:  # kept is the BN input c: x = c * alpha + beta per channel
            alpha = tl.load(alpha_ptr + c, mask=cmask, other=0.0).to(tl.float32)
            beta = tl.load(beta_ptr + c, mask=cmask, other=0.0).to(tl.float32)
            acc_g = tl.zeros((BS, BC), dtype=tl.float32)
        acc = tl.zeros((BS, BC), dtype=tl.float32)
        start = 0
        while start < S:  # (a while loop: Triton's interpreter cannot take a run-time range bound)
            s = start + tl.arange(0, BS)[:, None]
            mask = (s < S) & cmask
            offsets = _offsets(n, s, c, C, S, CHANNELS_LAST)
            g = tl.load(grad_out_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            out = tl.load(out_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            kept = tl.load(kept_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            if RELU:
                g = tl.where(out > 0.0, g, 0.0)
            tl.store(g_ptr + offsets, g.to(g_ptr.dtype.element_ty), mask=mask)
            if WRITE_GRAD_X:  # dL/dx = g * s; under AFFINE dL/dc = g * s * alpha
                gx = g * scale * alpha if AFFINE else g * scale
                tl.store(grad_x_ptr + offsets, gx.to(grad_x_ptr.dtype.element_ty), mask=mask)
            if RECOMPUTE:
                acc += g * (out - kept)  # x * s = out - skip where the ReLU passed
            elif AFFINE:  # the sums of g * c and of g, from which dL/ds, dL/dalpha and dL/dbeta follow
                acc += g * kept
                acc_g += g
            else:
                acc += g * kept
            start += BS
        ds = tl.sum(acc, axis=0)[None, :]
        if AFFINE:
            sum_g = tl.sum(acc_g, axis=0)[None, :]
            tl.store(sum_gc_ptr + n * C + c, ds, mask=cmask)
            tl.store(sum_g_ptr + n * C + c, sum_g, mask=cmask)
            ds = ds * alpha + sum_g * beta
        if RECOMPUTE:
            ds = tl.where(scale == 0.0, 0.0, ds / scale)
        tl.store(ds_ptr + n * C + c, ds.to(ds_ptr.dtype.element_ty), mask=cmask)


def scale_shift(
    x: Tensor, s: Tensor, b: Tensor, *, relu: bool, out: Tensor | None = None, shift_factor: float = 1.0,
    affine: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """act(x * s + b): s per (n, c) ((N, C, 1, ...)), b a full tensor like x or per (n, c), then times
    `shift_factor`; given `affine` = (alpha, beta) (C values each), x is the BN input c and the kernel uses
    c * alpha + beta in its place. `out=x` writes in place; s and a per-channel b may have any float dtype
    (read as float32). The caller checks `supported(x, b, scale=s)` (full b) or `supported(x, scale=s)`."""
    if b.shape == x.shape and shift_factor != 1.0:
        raise ValueError("shift_factor applies to a per-channel shift only")
    n, c = x.shape[:2]
    spatial = math.prod(x.shape[2:])
    layout = channels_last_of(x)
    b_full = b.shape == x.shape
    if out is None:
        out = torch.empty_like(x, memory_format=_memory_format(x, layout))
    block_s, block_c = _tiles(c, spatial, layout)
    grid = (n * triton.cdiv(spatial, block_s), triton.cdiv(c, block_c))
    per_n_c = _per_channel(s, n, c)
    alpha, beta = (t.reshape(c).float().contiguous() for t in affine) if affine is not None else (per_n_c, per_n_c)
    _scale_shift_kernel[grid](
        x, per_n_c, b if b_full else _per_channel(b, n, c), alpha, beta, out, c, spatial, shift_factor,
        B_FULL=b_full, AFFINE=affine is not None, RELU=relu, CHANNELS_LAST=layout, BS=block_s, BC=block_c,
        num_warps=4,
    )
    return out


def merge_backward(
    grad_out: Tensor,
    out: Tensor,
    kept: Tensor,
    s: Tensor,
    *,
    relu: bool,
    recompute: bool,
    grad_x: bool,
    affine: tuple[Tensor, Tensor] | None = None,
    sums: bool = False,
) -> tuple[Tensor, ...]:
    """(g, dL/dx or None, dL/ds) of out = relu?(x * s + skip). `kept` is x; or the shortcut with
    `recompute`; or, given `affine` = (alpha, beta) (C values each, any shape), the BN input c with
    x = c * alpha + beta, and then the second result is dL/dc = g * s * alpha and, with `sums`, the per-(n, c)
    sums of g * c and of g (float32, s's shape) follow (for dL/dalpha and dL/dbeta). dL/ds has s's shape and
    dtype (summed in float32). The caller checks `supported(out, kept, scale=s)`."""
    if recompute and affine is not None:
        raise ValueError("recompute and affine are two ways of rebuilding x: give one")
    if sums and affine is None:
        raise ValueError("sums come with affine")
    n, c = out.shape[:2]
    spatial = math.prod(out.shape[2:])
    layout = channels_last_of(out)
    fmt = _memory_format(out, layout)
    if not _dense_in(grad_out, layout) or grad_out.dtype != out.dtype:
        grad_out = grad_out.to(dtype=out.dtype, memory_format=fmt)
    g = torch.empty_like(out, memory_format=fmt)
    gx = torch.empty_like(out, memory_format=fmt) if grad_x else g  # g: an unused placeholder pointer
    ds = torch.empty(n, c, device=out.device, dtype=s.dtype)
    sum_gc, sum_g = (torch.empty(n, c, device=out.device, dtype=torch.float32) for _ in range(2)) if affine is not None else (ds, ds)
    block_s, block_c = _tiles(c, spatial, layout)
    block_s = min(block_s, 64) if layout else block_s  # the float32 accumulators live in registers
    if not layout:
        block_c = min(block_c, 4)
    elif affine is not None:
        block_s = min(block_s, 32)  # (two accumulators)
    grid = (n, triton.cdiv(c, block_c))
    alpha, beta = (t.reshape(c).float().contiguous() for t in affine) if affine is not None else (ds, ds)
    _merge_backward_kernel[grid](
        grad_out, out, kept, _per_channel(s, n, c), alpha, beta, g, gx, ds, sum_gc, sum_g, c, spatial,
        RELU=relu, RECOMPUTE=recompute, AFFINE=affine is not None, WRITE_GRAD_X=grad_x, CHANNELS_LAST=layout,
        BS=block_s, BC=block_c, num_warps=4,
    )
    result = (g, (gx if grad_x else None), ds.view(s.shape))
    return result + (sum_gc.view(s.shape), sum_g.view(s.shape)) if sums else result
