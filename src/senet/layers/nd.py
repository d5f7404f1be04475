"""Convolution, BatchNorm, InstanceNorm, max- and average-pool classes by number of spatial dimensions: signals (1),
images (2), volumes and video (3). The one lookup every layer, model and `senet.add_se` uses, so `dims` means the
same everywhere."""

from __future__ import annotations

from torch import nn

from senet.errors import ConfigError

CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BATCHNORM: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
MAXPOOL: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVGPOOL: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
INSTANCENORM: dict[int, type[nn.Module]] = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
# (isinstance checks: every convolution and BatchNorm class of 1-3 spatial dims)
CONVS: tuple[type[nn.Module], ...] = tuple(CONV.values())
BATCHNORMS: tuple[type[nn.Module], ...] = tuple(BATCHNORM.values())
# The inverse lookups, a class (exactly; subclasses are not looked up) -> its spatial dims: convolutions, and the
# per-channel norms (BatchNorm, InstanceNorm) whose num_features is the width of the conv before them.
CONV_DIMS: dict[type[nn.Module], int] = {cls: dims for dims, cls in CONV.items()}
NORM_DIMS: dict[type[nn.Module], int] = {cls: dims for table in (BATCHNORM, INSTANCENORM) for dims, cls in table.items()}


def check_dims(dims: int) -> int:
    """`dims` itself when it is 1, 2 or 3; else ConfigError."""
    if dims not in CONV:
        raise ConfigError(f"dims must be 1, 2 or 3, got {dims}")
    return dims
