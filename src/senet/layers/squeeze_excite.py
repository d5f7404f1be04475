"""The Squeeze-and-Excitation block (paper Sec. 3): one implementation for every model, variant and analysis
in senet; options are arguments named as in the paper (`reduction`, `squeeze`, `gate`), never subclasses.
Where a block sits in a residual unit and how the unit's merge runs it: `senet.layers.se_unit`, `merge`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from senet.errors import ConfigError, SenetError, check_choice
from senet.layers.activations import get_act, get_gate
from senet.layers.nd import BATCHNORM, CONV, check_dims

from senet.options import GATES, SE_IMPLS, SQUEEZES


class ShapeError(SenetError):
    """An input tensor whose shape does not fit the module it is given to."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to the nearest multiple of `divisor`, never dropping more than 10% (MobileNetV3 rounding)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def se_hidden_channels(channels: int, reduction: float = 16, *, divisor: int = 1, min_channels: int = 1) -> int:
    """Width C/r of the excitation bottleneck (Sec. 3.2): floor(C / r) as the paper and the release
    (`divisor=1`), or rounded as MobileNetV3 and timm do; never below `min_channels`. Without such a floor
    a reduction above C is an error rather than a 1-unit bottleneck."""
    if not reduction >= 1:
        raise ConfigError(f"reduction must be >= 1, got {reduction}; the paper uses r = 16")
    if reduction > channels and min_channels <= 1 and divisor <= 1:
        raise ConfigError(f"reduction {reduction} is larger than the {channels} channels it reduces, leaving an "
                          f"empty bottleneck; use reduction <= {channels}")
    if divisor > 1:
        return make_divisible(channels / reduction, divisor, max(min_channels, divisor))
    return max(min_channels, int(channels // reduction))


def global_pool(x: Tensor, mode: str = "avg") -> Tensor:
    """The squeeze F_sq (Eq. 2): average ("avg") or max ("max") of x (N, C, *spatial) over space, (N, C).

    The mean as a sum divided by the area (its backward hands x a broadcast view, a mean's writes a copy).
    A leaf for torch.fx (`torch.fx.wrap`): the area is read from x's shape, which a trace cannot read."""
    space = tuple(range(2, x.dim()))
    return x.amax(space) if mode == "max" else x.sum(space) / math.prod(x.shape[2:])


torch.fx.wrap("global_pool")


class GlobalPool(nn.Module):
    """`global_pool` as a module, keeping the spatial dims as 1s: (N, C, 1, ...)."""

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        self.mode = check_choice("squeeze", mode, ("avg", "max"))

    def forward(self, x: Tensor) -> Tensor:
        return global_pool(x, self.mode)[(...,) + (None,) * (x.dim() - 2)]

    def extra_repr(self) -> str:
        return self.mode


class SqueezeExcitation(nn.Module):
    """SE block (Sec. 3): x * gate(fc2(act(fc1(squeeze(x))))), the excitation one weight per channel.

    channels: C; reduction: r, the bottleneck C/r wide (Table 10); squeeze: ``avg`` (paper), ``max``
    (Table 11) or ``none`` (Table 16: no pooling, the FCs act at every position); gate: ``sigmoid``
    (paper), ``tanh``, ``relu`` (Table 12) or ``hard_sigmoid`` (MobileNetV3); act: the bottleneck's
    delta; bias: FC biases; hidden_channels, divisor, min_channels: the bottleneck width (C/r rounded, see
    `se_hidden_channels`); norm: BatchNorm after fc1; dims: 1, 2 or 3 spatial axes. The FCs are 1x1
    convolutions named as in the release (`fc1`, `fc2`). impl ``fused`` (default): they run as `F.linear`
    on the pooled (N, C) vector (the same weights; a matrix product instead of a convolution on
    N x C x 1 x 1, which matters where SE's cost is dispatch), and a unit's merge folds its BN in
    (`senet.layers.merge`); ``naive``: every part called as a module, so hooks on any of them fire.
    """

    def __init__(self, channels: int, reduction: float = 16, *, squeeze: str = "avg", gate: str = "sigmoid",
                 act: str = "relu", bias: bool = True, hidden_channels: int | None = None, divisor: int = 1,
                 min_channels: int = 1, norm: bool = False, dims: int = 2, impl: str = "fused") -> None:
        super().__init__()
        if channels < 1 or (hidden_channels is not None and hidden_channels < 1):
            raise ConfigError(f"channels and hidden_channels must be >= 1, got {channels}, {hidden_channels}")
        hidden = hidden_channels or se_hidden_channels(channels, reduction, divisor=divisor, min_channels=min_channels)
        self.channels, self.hidden_channels, self.dims = channels, hidden, check_dims(dims)
        self.squeeze_mode = check_choice("squeeze", squeeze, SQUEEZES)
        self.impl = check_choice("se implementation", impl, SE_IMPLS)
        self.squeeze = nn.Identity() if squeeze == "none" else GlobalPool(squeeze)
        self.fc1 = CONV[dims](channels, hidden, 1, bias=bias)
        self.bn = BATCHNORM[dims](hidden) if norm else nn.Identity()
        self.act = get_act(act, inplace=True)
        self.fc2 = CONV[dims](hidden, channels, 1, bias=bias)
        self.gate = get_gate(gate)

    def excite(self, z: Tensor) -> Tensor:
        """s = F_ex(z) = gate(W2 delta(W1 z)) (Eq. 3) on the squeezed (N, C) vector z, a block without BN: (N, C)."""
        hidden = self.act(F.linear(z, self.fc1.weight.flatten(1), self.fc1.bias))
        return self.gate(F.linear(hidden, self.fc2.weight.flatten(1), self.fc2.bias))

    def excitation(self, x: Tensor) -> Tensor:
        """The gates s of x, (N, C, 1, ...); (N, C, *spatial) for squeeze='none'."""
        if not (torch.jit.is_tracing() or isinstance(x, torch.fx.Proxy)):  # (they check the model's input)
            self.check_input(x)
        if (self.impl == "naive" or self.squeeze_mode == "none" or not isinstance(self.bn, nn.Identity)
                or torch.compiler.is_exporting()):  # (an export records the FCs as the 1x1 convolutions they are)
            return self.gate(self.fc2(self.act(self.bn(self.fc1(self.squeeze(x))))))  # every part a module call
        return self.excite(global_pool(x, self.squeeze_mode))[(...,) + (None,) * self.dims]

    def forward(self, x: Tensor) -> Tensor:
        """x * s (Eq. 4): each channel of x scaled by its excitation."""
        return x * self.excitation(x)

    def check_input(self, x: Tensor) -> None:
        """Raise ShapeError unless x is (N, channels, *spatial) with `dims` spatial axes."""
        if x.dim() != self.dims + 2:
            raise ShapeError(f"SqueezeExcitation({self.channels}, dims={self.dims}) expects a {self.dims + 2}-D input "
                             f"(N, C, {', '.join('HWD'[: self.dims])}), got shape {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise ShapeError(f"SqueezeExcitation expects {self.channels} channels, got {x.shape[1]} (input shape "
                             f"{tuple(x.shape)}); build it with channels={x.shape[1]} or fix the input")

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden_channels}, squeeze={self.squeeze_mode}, impl={self.impl}"
