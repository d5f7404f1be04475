"""SE in a network (paper Sec. 6): how a network uses SE (`SEConfig`: the block's options, the stages, the
position) and where a block sits in a residual unit (`SEResidualUnit`, Sec. 6.5, Fig. 5), whose merge is
`senet.layers.merge.merge`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from senet.errors import ConfigError, check_choice
from senet.layers.drop import as_drop_path, make_drop_path
from senet.layers.merge import merge
from senet.layers.squeeze_excite import GATES, SQUEEZES, SqueezeExcitation
from senet.options import SE_POSITIONS


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
        channels = {"standard": out_channels, "post": out_channels, "identity": out_channels, "pre": in_channels,
                    "3x3": mid_channels}[se.position]
        self.se = se.build(channels, dims)

    def se_pre(self, x: Tensor) -> Tensor:
        """SE on the unit's input for se_position='pre', else x."""
        return self.se(x) if self.se is not None and self.se_position == "pre" else x

    def se_mid(self, x: Tensor) -> Tensor:
        """SE after a bottleneck's 3x3 convolution for se_position='3x3', else x."""
        return self.se(x) if self.se is not None and self.se_position == "3x3" else x

    def se_merge(
        self,
        residual: Tensor,
        shortcut: Tensor,
        act: Callable[[Tensor], Tensor] | None = None,
        norm: nn.Module | None = None,
    ) -> Tensor:
        """act(residual + shortcut) with SE applied where `se_position` puts it; given `norm`, the residual
        is norm(residual) (the unit's last BN, which the fused merge folds in). `residual` is consumed."""
        drop_path = as_drop_path(self.drop_path)
        if self.se_position == "standard":  # act(residual * s + shortcut), the release's Axpy layer
            return merge(residual, shortcut, se=self.se, norm=norm, act=act, drop_path=drop_path)
        if self.se_position == "identity":  # act(SE(shortcut) + drop_path(residual))
            residual = self.drop_path(residual if norm is None else norm(residual))
            return merge(shortcut, residual, se=self.se, act=act)
        out = merge(residual, shortcut, norm=norm, act=act, drop_path=drop_path)
        return self.se(out) if self.se_position == "post" else out
