"""Model registry: `@register_model` builders, `create_model`, `list_models`, plain/SE twins.

Every SE model `se_x` has a plain twin `x`: the same network with no SE blocks (senet154 -> senet154_plain).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from senet.errors import ConfigError, UnknownModelError, did_you_mean
from senet.layers import SEConfig
from senet.models.features import check_features_only, with_features_only

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}
_PLAIN_TWIN_OVERRIDES = {"senet154": "senet154_plain"}

# Model keyword -> SEConfig field. These are the names users pass to create_model and the CLI flags.
SE_KWARGS = {
    "reduction": "reduction",
    "squeeze": "squeeze",
    "gate": "gate",
    "se_act": "act",
    "se_bias": "bias",
    "se_position": "position",
    "se_stages": "stages",
    "se_divisor": "divisor",
    "se_min_channels": "min_channels",
    "se_norm": "norm",
}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name; its module gives the family."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    _FAMILY[name] = fn.__module__.rsplit(".", 1)[-1]
    return fn


def _natural_key(name: str) -> list[object]:
    """resnet18 < resnet34 < resnet101: numbers compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*", *, se: bool | None = None, family: str | None = None) -> list[str]:
    """Registered model names matching a shell-style `pattern`, optionally only SE (or only plain) ones."""
    names = sorted((n for n in _MODELS if fnmatch.fnmatch(n, pattern)), key=_natural_key)
    if se is not None:
        names = [n for n in names if is_se_model(n) == se]
    if family is not None:
        names = [n for n in names if _FAMILY[n] == family]
    return names


def model_family(name: str) -> str:
    return _FAMILY[_check_name(name)]


def is_se_model(name: str) -> bool:
    return name.startswith("se_") or name in _PLAIN_TWIN_OVERRIDES


def declare_plain_twin(se_name: str, plain_name: str) -> None:
    """Mark `se_name`, an SE model whose name has no `se_` prefix, as the SE twin of `plain_name`
    (as senet154 -> senet154_plain; MobileNetV3 is published with SE)."""
    _PLAIN_TWIN_OVERRIDES[se_name] = plain_name


def plain_twin(name: str) -> str:
    """The plain network of an SE model (`se_resnet50` -> `resnet50`); a plain model is its own twin."""
    _check_name(name)
    if name in _PLAIN_TWIN_OVERRIDES:
        return _PLAIN_TWIN_OVERRIDES[name]
    return name[3:] if name.startswith("se_") else name


def se_twin(name: str) -> str | None:
    """The SE network of a plain model, or None if it has none."""
    _check_name(name)
    for se_name in _MODELS:
        if is_se_model(se_name) and plain_twin(se_name) == name:
            return se_name
    return name if is_se_model(name) else None


def _check_name(name: str) -> str:
    if name not in _MODELS:
        raise UnknownModelError(
            f"unknown model {name!r}{did_you_mean(name, _MODELS)}; `senet models` lists them all"
        )
    return name


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    return _MODELS[_check_name(name)]


def create_model(
    name: str, *, features_only: bool = False, out_indices: Iterable[int] | None = None, **kwargs: Any
) -> nn.Module:
    """Build a registered model: `create_model("se_resnet50", num_classes=10, reduction=8)`.

    `features_only=True`: the backbone whose forward gives the stage maps of `out_indices` (default all of
    `model.feature_info`) as a list (`senet.models.features.FeatureListNet`).
    """
    check_features_only(features_only, out_indices)
    return with_features_only(model_entrypoint(name)(**kwargs), features_only, out_indices)


def pop_se_config(
    name: str, kwargs: dict[str, Any], *, se: bool, defaults: SEConfig | None = None
) -> SEConfig | None:
    """Remove the SE keywords from `kwargs` and return the SEConfig they describe (None for a plain model)."""
    given = {k: kwargs.pop(k) for k in list(kwargs) if k in SE_KWARGS}
    if not se:
        if given:
            twin = next((n for n in _MODELS if is_se_model(n) and plain_twin(n) == name), None)
            hint = f"; use {twin!r} for the SE network" if twin else ""
            raise ConfigError(f"{name} has no SE blocks, so {', '.join(sorted(given))} do not apply{hint}")
        return None
    config = defaults or SEConfig()
    return config.replace(**{SE_KWARGS[k]: v for k, v in given.items() if v is not None})


def check_kwargs(name: str, kwargs: dict[str, Any], allowed: Iterable[str]) -> None:
    """Raise ConfigError for keywords of `kwargs` that model `name` does not take."""
    options = sorted(set(allowed) | (set(SE_KWARGS) if is_se_model(name) else set()))
    for key in kwargs:
        if key not in options:
            raise ConfigError(
                f"{name} got an unknown keyword {key!r}{did_you_mean(key, options)}; "
                f"it takes: {', '.join(options)}"
            )
