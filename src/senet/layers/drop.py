"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"), per sample as in timm's
`DropPath`: in training each sample's residual branch is kept with probability 1 - p and scaled by
1 / (1 - p), so its expected value is unchanged; in eval it is the identity.

The unit's rates grow linearly with depth (`drop_path_rates`: rate * i / (n - 1), timm's rule). With the
fused SE merge the branch is x * s, so dropping a sample's branch is scaling its row of s by 0 or
1 / keep (`DropPath.sample_scale`, which `senet.layers.merge.merge` folds into s).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from senet.errors import ConfigError


def check_drop_path_rate(rate: float, model: str = "this model") -> float:
    """`rate` as a float if 0 <= rate < 1, else a one-line ConfigError."""
    if not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"{model}: drop_path_rate must be in [0, 1), got {rate}; timm's usual values are 0.05 .. 0.2")
    return float(rate)


def drop_path_rates(rate: float, units: int) -> list[float]:
    """Linearly increasing drop-path rates for `units` residual units: rate * i / (units - 1), i = 0 .. units - 1."""
    if units <= 1:
        return [rate] * units
    return [rate * i / (units - 1) for i in range(units)]


class DropPath(nn.Module):
    """Drop a sample's residual branch with probability `p` in training, scaling kept ones by 1 / (1 - p).

    Input (N, ...), output the same shape. The per-sample keep mask is drawn in float32, (N,), so the
    fused merge (which scales s) and this module draw the same values from the same RNG state.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def sample_scale(self, x: Tensor) -> Tensor | None:
        """The (N,) per-sample factors (0 or 1 / keep) for x in training with p > 0, else None."""
        if not self.training or self.p == 0.0:
            return None
        keep = 1.0 - self.p
        mask = torch.empty([x.shape[0]], dtype=torch.float32, device=x.device).bernoulli_(keep)
        return mask.div_(keep)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.sample_scale(x)
        if scale is None:
            return x
        return x * scale.to(x.dtype).view([x.shape[0]] + [1] * (x.dim() - 1))

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


def make_drop_path(p: float) -> nn.Module:
    """A `DropPath(p)`, or `nn.Identity()` for p = 0 (a unit without stochastic depth)."""
    return DropPath(p) if p > 0 else nn.Identity()


def as_drop_path(module: nn.Module) -> DropPath | None:
    """`module` if it is a `DropPath` (what `merge` takes), else None."""
    return module if isinstance(module, DropPath) else None
