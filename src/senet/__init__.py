"""senet: Squeeze-and-Excitation Networks (Hu et al., CVPR 2018 / TPAMI 2019) for PyTorch.

The names below are imported when first used (PEP 562): `import senet` costs nothing, `senet.create_model`
imports the model API (layers and models) and nothing else; `load_model`, `add_se` and `complexity` bring
in what they need when asked for. So the `senet` command starts without importing torch.
"""

from __future__ import annotations

import importlib

from senet.lazy import lazy_exports

__version__ = "0.1.0"

# Each public name and the module that defines it.
_EXPORTS = {
    "Complexity": "senet.analysis.complexity",
    "complexity": "senet.analysis.complexity",
    "ConfigError": "senet.errors",
    "SenetError": "senet.errors",
    "UnknownModelError": "senet.errors",
    "load_model": "senet.interop.load",
    "SEReport": "senet.interop.retrofit",
    "add_se": "senet.interop.retrofit",
    "SEConfig": "senet.layers",
    "ShapeError": "senet.layers",
    "SqueezeExcitation": "senet.layers",
    "create_model": "senet.interop.pretrained",
    "is_se_model": "senet.models",
    "list_models": "senet.interop.pretrained",
    "plain_twin": "senet.models",
    "register_model": "senet.models",
    "se_twin": "senet.models",
}

__all__ = sorted(_EXPORTS, key=lambda name: (name[0].islower(), name))
_export, __dir__ = lazy_exports(globals(), _EXPORTS)


def __getattr__(name: str) -> object:
    """The exports above, and the subpackage `senet.data` as timm's `timm.data` (resolve_data_config, create_transform)."""
    if name == "data":
        return importlib.import_module("senet.data")
    return _export(name)
