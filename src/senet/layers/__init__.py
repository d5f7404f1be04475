"""Building blocks: the SE block family, gates, squeeze ops."""

from senet.layers.activations import ACTIVATIONS, GATES, get_act, get_gate
from senet.layers.fused import fast_se, fast_se_enabled, scale_add_act, set_fast_se
from senet.layers.squeeze_excite import (
    SE_POSITIONS,
    SQUEEZES,
    GlobalPool,
    SEConfig,
    SEResidualUnit,
    ShapeError,
    SqueezeExcitation,
    make_divisible,
    se_hidden_channels,
)

__all__ = [
    "ACTIVATIONS",
    "GATES",
    "SE_POSITIONS",
    "SQUEEZES",
    "GlobalPool",
    "SEConfig",
    "SEResidualUnit",
    "ShapeError",
    "SqueezeExcitation",
    "fast_se",
    "fast_se_enabled",
    "get_act",
    "get_gate",
    "make_divisible",
    "scale_add_act",
    "se_hidden_channels",
    "set_fast_se",
]
