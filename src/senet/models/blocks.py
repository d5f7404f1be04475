"""Pieces the families beyond ResNet share: conv-BN-activation, the inception module (concatenation then
SE), SE-option checks, and the builder their registered model functions call.

The families beyond ResNet (VGG, Inception, MobileNet, ShuffleNet) each have one SE placement, the one
the paper (or the architecture) defines; it is the `se_position="standard"` of that family. The residual
integration variants of Fig. 5 (pre, post, identity, 3x3) are defined on ResNet units and are offered by
the ResNet family (2-D, 1-D and 3-D).
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from senet.errors import ConfigError
from senet.layers import SEConfig, get_act
from senet.models.base import BATCHNORM, CONV, ImageClassifier
from senet.models.registry import check_kwargs, pop_se_config

M = TypeVar("M", bound=ImageClassifier)


class ConvBnAct(nn.Sequential):
    """Convolution, BatchNorm, activation (`act=None`: none). Padding defaults to 'same' for odd kernels.

    Input (N, in_channels, *spatial), output (N, out_channels, *spatial / stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int = 1,
        padding: int | tuple[int, ...] | None = None,
        *,
        groups: int = 1,
        bias: bool = False,
        act: str | None = "relu",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        dims: int = 2,
    ) -> None:
        if padding is None:
            padding = tuple(k // 2 for k in kernel_size) if isinstance(kernel_size, tuple) else kernel_size // 2
        super().__init__()
        self.conv = CONV[dims](in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.bn = BATCHNORM[dims](out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.Identity() if act is None else get_act(act, inplace=True)
        self.in_channels = in_channels
        self.out_channels = out_channels


def check_se_placement(
    model: str, se: SEConfig | None, *, placement: str, stages: tuple[int, ...], stage_names: str
) -> None:
    """Raise ConfigError unless `se` asks for the family's one placement and only stages the model has.

    `placement` says in words where SE sits (for the message); `stages` are the valid `se_stages`
    numbers and `stage_names` says what they count.
    """
    if se is None:
        return
    if se.position != "standard":
        raise ConfigError(
            f"{model} has one SE placement, se_position='standard' ({placement}), got {se.position!r}; "
            "the residual variants pre/post/identity/3x3 (Fig. 5) are options of the ResNet models"
        )
    if se.stages is not None and (not se.stages or any(s not in stages for s in se.stages)):
        raise ConfigError(
            f"se_stages {se.stages} is not a non-empty subset of {model}'s stages {stages} ({stage_names})"
        )


class InceptionModule(nn.Module):
    """Parallel branches concatenated along channels, then SE on the concatenation (paper Fig. 2, Sec. 3.3).

    `branches` maps names to modules that take the same input and keep its spatial size (or all reduce
    it by the same stride); `out_channels` is the sum of their widths. Input (N, C_in, H, W), output
    (N, out_channels, H', W').
    """

    def __init__(
        self, branches: dict[str, nn.Module], out_channels: int, se: SEConfig | None = None, dims: int = 2
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleDict(branches)
        self.out_channels = out_channels
        self.se = None if se is None else se.build(out_channels, dims)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.cat([branch(x) for branch in self.branches.values()], 1)
        return out if self.se is None else self.se(out)


USER_KWARGS = ("num_classes", "in_chans", "drop_rate")


def build_model(
    cls: type[M], name: str, se: bool, kwargs: dict[str, Any], *, extra_kwargs: tuple[str, ...] = (),
    se_defaults: SEConfig | None = None, **arch: Any,
) -> M:
    """Build registered model `name` = `cls(**arch)` from the user's `kwargs` (the SE keywords become its
    SEConfig, None for a plain model; unknown keywords raise ConfigError)."""
    se_config = pop_se_config(name, kwargs, se=se, defaults=se_defaults)
    if "drop_path_rate" in kwargs and "drop_path_rate" not in extra_kwargs:
        raise ConfigError(
            f"{name} has no residual units, so drop_path_rate (stochastic depth) does not apply; the ResNet, "
            "CIFAR ResNet, Inception-ResNet-v2, MobileNetV3 and ShuffleNet models take it"
        )
    check_kwargs(name, kwargs, USER_KWARGS + extra_kwargs)
    return cls(se=se_config, name=name, **arch, **kwargs)
