"""Building blocks: the SE block family, gates, squeeze ops, the residual merge."""

from senet.layers.activations import ACTIVATIONS, GATES, get_act, get_gate
from senet.layers.merge import merge, se_impl, se_path, set_se_impl
from senet.layers.nd import BATCHNORM, CONV, MAXPOOL
from senet.layers.se_unit import SE_POSITIONS, SEConfig, SEResidualUnit
from senet.layers.squeeze_excite import (
    SE_IMPLS,
    SQUEEZES,
    GlobalPool,
    ShapeError,
    SqueezeExcitation,
    make_divisible,
    se_hidden_channels,
)

__all__ = [
    "ACTIVATIONS",
    "BATCHNORM",
    "CONV",
    "GATES",
    "MAXPOOL",
    "SE_IMPLS",
    "SE_POSITIONS",
    "SQUEEZES",
    "GlobalPool",
    "SEConfig",
    "SEResidualUnit",
    "ShapeError",
    "SqueezeExcitation",
    "get_act",
    "get_gate",
    "make_divisible",
    "merge",
    "se_hidden_channels",
    "se_impl",
    "se_path",
    "set_se_impl",
]
