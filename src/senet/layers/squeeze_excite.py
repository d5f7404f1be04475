"""The Squeeze-and-Excitation block (paper Sec. 3) and where it sits in a residual unit (Sec. 6.5, Fig. 5).

One implementation serves every model, variant and analysis in senet: options are arguments named as in
the paper (`reduction`, `squeeze`, `gate`), never subclasses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from senet.errors import ConfigError, SenetError, check_choice
from senet.layers.activations import get_act, get_gate
from senet.layers.drop import as_drop_path, make_drop_path
from senet.layers.merge import SE_IMPLS, merge
from senet.layers.nd import BATCHNORM, CONV, check_dims

from senet.options import GATES, SE_POSITIONS, SQUEEZES


class ShapeError(SenetError):
    """An input tensor whose shape does not fit the module it is given to."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to the nearest multiple of `divisor`, never dropping more than 10% (MobileNetV3 rounding)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def se_hidden_channels(
    channels: int, reduction: float = 16, *, divisor: int = 1, min_channels: int = 1
) -> int:
    """Width C/r of the excitation bottleneck (Sec. 3.2).

    `divisor=1` gives the paper's and the official release's floor(C / r); a larger divisor rounds as
    MobileNetV3 and timm do. The result is never below `min_channels`; without such a floor (1, the
    default) a reduction above C is an error rather than a 1-unit bottleneck.
    """
    if not reduction >= 1:
        raise ConfigError(f"reduction must be >= 1, got {reduction}; the paper uses r = 16")
    if reduction > channels and min_channels <= 1 and divisor <= 1:
        raise ConfigError(
            f"reduction {reduction} is larger than the {channels} channels it reduces, leaving an empty "
            f"bottleneck; use reduction <= {channels}"
        )
    if divisor > 1:
        return make_divisible(channels / reduction, divisor, max(min_channels, divisor))
    return max(min_channels, int(channels // reduction))


def global_pool(x: Tensor, mode: str) -> Tensor:
    """Average ("avg") or max ("max") of x (N, C, *spatial) over every spatial axis: (N, C, 1, ...).

    A leaf for torch.fx (`torch.fx.wrap` below): the axes depend on x's rank, which a trace cannot read.
    """
    dims = tuple(range(2, x.dim()))
    if mode == "max":
        return x.amax(dims, keepdim=True)
    # The mean as a sum divided by H*W (the same values): the backward of a sum hands x a broadcast
    # view of the gradient, where that of a mean writes a full-size copy of it divided by H*W.
    return x.sum(dims, keepdim=True) / math.prod(x.shape[2:])


torch.fx.wrap("global_pool")


class GlobalPool(nn.Module):
    """The squeeze F_sq: global average (paper) or max pooling over every spatial axis, keeping the dims."""

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        self.mode = check_choice("squeeze", mode, ("avg", "max"))

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # (TorchScript has no math.prod of a shape)
            axes = [axis for axis in range(2, x.dim())]
            return x.amax(axes, keepdim=True) if self.mode == "max" else x.mean(axes, keepdim=True)
        else:
            return global_pool(x, self.mode)

    def extra_repr(self) -> str:
        return self.mode


class SqueezeExcitation(nn.Module):
    """SE block (Sec. 3): x * gate(fc2(act(fc1(squeeze(x))))), the excitation one weight per channel.

    Args:
        channels: C, the channels of the input.
        reduction: r, the bottleneck is C/r wide (Sec. 3.2; Table 10 studies 2..32).
        squeeze: ``avg`` (paper), ``max`` (Table 11) or ``none`` (NoSqueeze, Table 16: no pooling, the
            FCs act as 1x1 convolutions at every position).
        gate: the excitation non-linearity: ``sigmoid`` (paper), ``tanh``, ``relu`` (Table 12) or
            ``hard_sigmoid`` (MobileNetV3).
        act: the bottleneck non-linearity delta (``relu`` in the paper).
        bias: FC biases (the release has them; the paper's ablation recipe does not).
        hidden_channels: the bottleneck width, overriding C/r.
        divisor, min_channels: rounding of C/r (see `se_hidden_channels`).
        norm: BatchNorm after fc1, as some MobileNetV3 ports have.
        dims: 1, 2 or 3 spatial dimensions (signals, images, volumes/video).
        impl: how a residual unit's merge runs this block (`senet.layers.merge`): ``fused`` (default: the
            unit's last BN folded in, one op) or ``naive`` (the formula, every part called as a module).

    The FCs are 1x1 convolutions, exactly equivalent to the paper's fully connected layers and named as
    in the official release (`fc1`, `fc2`). Input (N, C, *spatial), output the same shape.
    """

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        *,
        squeeze: str = "avg",
        gate: str = "sigmoid",
        act: str = "relu",
        bias: bool = True,
        hidden_channels: int | None = None,
        divisor: int = 1,
        min_channels: int = 1,
        norm: bool = False,
        dims: int = 2,
        impl: str = "fused",
    ) -> None:
        super().__init__()
        check_choice("squeeze", squeeze, SQUEEZES)
        check_dims(dims)
        if channels < 1:
            raise ConfigError(f"channels must be >= 1, got {channels}")
        if hidden_channels is None:
            hidden_channels = se_hidden_channels(
                channels, reduction, divisor=divisor, min_channels=min_channels
            )
        elif hidden_channels < 1:
            raise ConfigError(f"hidden_channels must be >= 1, got {hidden_channels}")
        self.channels = channels
        self.hidden_channels = hidden_channels
        self.dims = dims
        self.squeeze_mode = squeeze
        self.impl = check_choice("se implementation", impl, SE_IMPLS)
        conv = CONV[dims]
        self.squeeze = nn.Identity() if squeeze == "none" else GlobalPool(squeeze)
        self.fc1 = conv(channels, hidden_channels, 1, bias=bias)
        self.bn = BATCHNORM[dims](hidden_channels) if norm else nn.Identity()
        self.act = get_act(act, inplace=True)
        self.fc2 = conv(hidden_channels, channels, 1, bias=bias)
        self.gate = get_gate(gate)

    def check_input(self, x: Tensor) -> None:
        """Raise ShapeError unless x is (N, channels, *spatial) with `dims` spatial axes."""
        if x.dim() != self.dims + 2:
            raise ShapeError(
                f"SqueezeExcitation({self.channels}, dims={self.dims}) expects a {self.dims + 2}-D input "
                f"(N, C, {', '.join('HWD'[: self.dims])}), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.channels:
            raise ShapeError(
                f"SqueezeExcitation expects {self.channels} channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); build it with channels={x.shape[1]} or fix the input"
            )

    def excitation(self, x: Tensor) -> Tensor:
        """The gate values s (Eq. 3), shape (N, C, 1, ...) or (N, C, *spatial) for squeeze='none'."""
        if not torch.jit.is_scripting():  # (TorchScript compiles nothing under this)
            if not torch.jit.is_tracing() and not isinstance(x, torch.fx.Proxy):
                self.check_input(x)  # (a torch.fx trace checks the model's input instead)
        s = self.squeeze(x)
        s = self.act(self.bn(self.fc1(s)))
        return self.gate(self.fc2(s))

    def forward(self, x: Tensor) -> Tensor:
        """x * s (Eq. 4): each channel of x scaled by its excitation."""
        return x * self.excitation(x)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, hidden={self.hidden_channels}, squeeze={self.squeeze_mode}, impl={self.impl}"
        )


@dataclass(frozen=True)
class SEConfig:
    """How a network uses SE: the block's options plus where it goes (Sec. 6 ablations).

    `stages` uses the paper's numbering conv2_x .. conv5_x = 2 .. 5 (Table 13); None means every stage.
    `reduction` is one ratio r for every SE block, or a tuple of positive ints, one per SE stage (the stages
    in `stages`, else every stage of the model that carries SE), e.g. (16, 16, 16, 8) for SE-ResNet-50.
    """

    reduction: float | tuple[int, ...] = 16
    squeeze: str = "avg"
    gate: str = "sigmoid"
    act: str = "relu"
    bias: bool = True
    position: str = "standard"
    stages: tuple[int, ...] | None = None
    divisor: int = 1
    min_channels: int = 1
    norm: bool = False

    def __post_init__(self) -> None:
        check_choice("squeeze", self.squeeze, SQUEEZES)
        check_choice("gate", self.gate, GATES)
        check_choice("se_position", self.position, SE_POSITIONS)
        if isinstance(self.reduction, (tuple, list)):
            if not self.reduction or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in self.reduction):
                raise ConfigError(
                    f"a per-stage reduction must be positive ints, one per SE stage, got {tuple(self.reduction)}; "
                    "e.g. reduction=(16, 16, 16, 8)"
                )
            object.__setattr__(self, "reduction", tuple(self.reduction))
        elif not self.reduction >= 1:
            raise ConfigError(f"reduction must be >= 1, got {self.reduction}; the paper uses r = 16")
        if self.stages is not None:
            object.__setattr__(self, "stages", tuple(int(s) for s in self.stages))

    def replace(self, **changes: object) -> SEConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def for_stage(self, stage: int, model_stages: tuple[int, ...] | None = None) -> SEConfig | None:
        """The config of SE in `stage` (paper numbering; `model_stages`: the stages of the model that can carry
        SE), with that stage's ratio of a per-stage `reduction`; None if SE does not go into `stage`."""
        if self.stages is not None and stage not in self.stages:
            return None
        if not isinstance(self.reduction, tuple):
            return self
        se_stages = tuple(model_stages or ()) if self.stages is None else tuple(sorted(self.stages))
        if len(self.reduction) != len(se_stages):
            raise ConfigError(
                f"reduction {self.reduction} gives {len(self.reduction)} ratios for {len(se_stages)} SE stages "
                f"{se_stages}; give one ratio per SE stage or a single reduction"
            )
        return self.replace(reduction=self.reduction[se_stages.index(stage)])

    def check_stages(self, valid: tuple[int, ...], model: str = "this model") -> None:
        """Raise ConfigError if `stages` names a stage the model does not have."""
        if self.stages is None:
            return
        bad = [s for s in self.stages if s not in valid]
        if bad or not self.stages:
            raise ConfigError(
                f"se_stages {self.stages} is not a non-empty subset of {model}'s stages {valid} "
                "(paper numbering: conv2_x = 2 ... conv5_x = 5)"
            )

    def build(self, channels: int, dims: int = 2) -> SqueezeExcitation:
        if isinstance(self.reduction, tuple):
            raise ConfigError(f"a per-stage reduction {self.reduction} is resolved by stage (`for_stage`) first")
        return SqueezeExcitation(
            channels,
            self.reduction,
            squeeze=self.squeeze,
            gate=self.gate,
            act=self.act,
            bias=self.bias,
            divisor=self.divisor,
            min_channels=self.min_channels,
            norm=self.norm,
            dims=dims,
        )


class SEResidualUnit(nn.Module):
    """Base of residual units that carry SE at one of the paper's integration points (Fig. 5, Table 14-15).

    standard: on the residual branch before the sum; pre: at the input of the residual branch;
    post: after the sum (and its activation); identity: on the shortcut, in parallel with the unit;
    3x3: inside a bottleneck, right after the 3x3 convolution. Subclasses call `init_se` and then
    `se_pre`, `se_mid` and `se_merge` in their forward; `init_se` sets `se_position` (a str).
    """

    def init_se(
        self,
        se: SEConfig | None,
        *,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        dims: int = 2,
        drop_path: float | None = None,
    ) -> None:
        """Build the SE block for `se` (None: no SE) and the stochastic depth of the branch (`drop_path`,
        the probability of dropping it, `senet.layers.drop.DropPath`; 0: an `nn.Identity`; None: keep the
        unit's own, as when `senet.add_se` adds SE to a built unit)."""
        if drop_path is not None or not hasattr(self, "drop_path"):
            self.drop_path = make_drop_path(drop_path or 0.0)
        self.se_position = "none" if se is None else se.position
        if se is None:
            self.se = None
            return
        channels = {
            "standard": out_channels,
            "post": out_channels,
            "identity": out_channels,
            "pre": in_channels,
            "3x3": mid_channels,
        }[se.position]
        self.se = se.build(channels, dims)

    def se_pre(self, x: Tensor) -> Tensor:
        se = self.se
        if se is not None and self.se_position == "pre":
            return se(x)
        return x

    def se_mid(self, x: Tensor) -> Tensor:
        se = self.se
        if se is not None and self.se_position == "3x3":
            return se(x)
        return x

    # The plain formulation of the merge, for TorchScript (which cannot compile `merge`, whose fast path
    # is a custom op): a unit's forward returns `self.se_post(act(self.se_sum(norm(residual), shortcut)))`
    # when `torch.jit.is_scripting()`. The same values as `se_merge`.

    def se_sum(self, residual: Tensor, shortcut: Tensor) -> Tensor:
        """drop_path(SE(residual)) + shortcut, with SE at `se_position` (standard: on the residual, identity:
        on the shortcut; pre and 3x3 happened earlier, post is `se_post`)."""
        se = self.se
        if se is not None:
            if self.se_position == "standard":
                residual = se(residual)
            elif self.se_position == "identity":
                shortcut = se(shortcut)
        return self.drop_path(residual) + shortcut

    def se_post(self, x: Tensor) -> Tensor:
        """SE on the unit's output for se_position='post', else x."""
        se = self.se
        if se is not None and self.se_position == "post":
            return se(x)
        return x

    def se_merge(
        self,
        residual: Tensor,
        shortcut: Tensor,
        act: Callable[[Tensor], Tensor] | None = None,
        norm: nn.Module | None = None,
        shortcut_kept: bool = False,
    ) -> Tensor:
        """act(residual + shortcut) with SE applied where `se_position` puts it; given `norm`, the
        residual is norm(residual) (the unit's last BN, which the fused merge folds in). `residual` is
        consumed (its memory may hold the result); `shortcut_kept`: the shortcut is the unit's input
        (an identity shortcut), see `senet.layers.merge.merge`."""
        drop_path = as_drop_path(self.drop_path)
        if self.se_position == "standard":  # act(residual * s + shortcut), the release's Axpy layer
            return merge(residual, shortcut, se=self.se, norm=norm, act=act, drop_path=drop_path, skip_kept=shortcut_kept)
        if self.se_position == "identity":  # act(SE(shortcut) + drop_path(residual))
            residual = self.drop_path(residual if norm is None else norm(residual))
            return merge(shortcut, residual, se=self.se, act=act)
        out = merge(residual, shortcut, norm=norm, act=act, drop_path=drop_path)
        if self.se_position == "post":
            out = self.se(out)
        return out
