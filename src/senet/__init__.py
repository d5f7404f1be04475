"""senet: Squeeze-and-Excitation Networks (Hu et al., CVPR 2018 / TPAMI 2019) for PyTorch."""

from senet.analysis import Complexity, complexity
from senet.errors import ConfigError, SenetError, UnknownModelError
from senet.interop.load import load_model
from senet.interop.pretrained import create_model, list_models
from senet.interop.retrofit import SEReport, add_se
from senet.layers import SEConfig, ShapeError, SqueezeExcitation
from senet.models import (
    is_se_model,
    plain_twin,
    register_model,
    se_twin,
)

__version__ = "0.1.0"

__all__ = [
    "Complexity",
    "ConfigError",
    "SEConfig",
    "SEReport",
    "SenetError",
    "ShapeError",
    "SqueezeExcitation",
    "UnknownModelError",
    "add_se",
    "complexity",
    "create_model",
    "is_se_model",
    "list_models",
    "load_model",
    "plain_twin",
    "register_model",
    "se_twin",
]
