"""Model registry: `@register_model` builders, `create_model`, `list_models`, plain/SE twins, timm's names.

Every SE model `se_x` has a plain twin `x`: the same network with no SE blocks (senet154 -> senet154_plain).
timm's names of the same networks are aliases (`seresnet50` = se_resnet50 in the torchvision layout with SE
widths rounded to 8, `legacy_seresnet50` = se_resnet50 in the paper layout; `timm_names.ALIASES`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from senet.errors import ConfigError, UnknownModelError, did_you_mean
from senet.options import IMAGENET_MEAN, IMAGENET_STD
from senet.layers import SEConfig
from senet.layers.nd import CONVS
from senet.models.features import check_features_only, with_features_only
from senet.models.timm_names import ALIASES as TIMM_ALIASES
from senet.models.timm_names import PRETRAINED as TIMM_PRETRAINED

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


def list_models(
    pattern: str = "*", *, se: bool | None = None, family: str | None = None, aliases: bool = False
) -> list[str]:
    """Registered model names matching a shell-style `pattern`, optionally only SE (or only plain) ones;
    `aliases=True` adds timm's names of senet networks (`seresnet50`, `legacy_seresnet50`, ...)."""
    pool = list(_MODELS) + (list(TIMM_ALIASES) if aliases else [])
    names = sorted((n for n in pool if fnmatch.fnmatch(n, pattern)), key=_natural_key)
    if se is not None:
        names = [n for n in names if is_se_model(n) == se]
    if family is not None:
        names = [n for n in names if _FAMILY[resolve_name(n)[0]] == family]
    return names


def model_family(name: str) -> str:
    return _FAMILY[resolve_name(name)[0]]


def is_se_model(name: str) -> bool:
    if name in TIMM_ALIASES:
        return True  # timm's SE names only
    return name.startswith("se_") or name in _PLAIN_TWIN_OVERRIDES


def resolve_name(name: str) -> tuple[str, dict[str, Any]]:
    """(senet model, keywords) of a model name: a registered name itself, timm's name of a senet network
    (`seresnet50` -> se_resnet50 with layout="torchvision", se_divisor=8), either with timm's pretrained
    tag (`seresnet50.a1_in1k`); UnknownModelError (with the closest names) for any other."""
    base, _, tag = name.partition(".")
    if base in TIMM_ALIASES:
        model, kwargs = TIMM_ALIASES[base]
        tags = [entry["tag"] for entry in TIMM_PRETRAINED.get(base, [])]
        if tag and tag not in tags:
            raise UnknownModelError(f"timm's {base} has no pretrained tag {tag!r}; its tags: {', '.join(tags) or 'none'}")
        return model, dict(kwargs)
    if tag:
        raise UnknownModelError(f"{name!r}: a .tag names timm's pretrained weights, and {base} is no timm name senet has")
    return _check_name(name), {}


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
        known = list(_MODELS) + list(TIMM_ALIASES)
        raise UnknownModelError(
            f"unknown model {name!r}{did_you_mean(name, known)}; `senet models` lists them all"
        )
    return name


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    return _MODELS[_check_name(name)]


def create_model(
    model_name: str,
    pretrained: bool = False,
    pretrained_cfg: dict[str, Any] | str | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    checkpoint_path: str | None = None,
    *,
    features_only: bool = False,
    out_indices: Iterable[int] | None = None,
    global_pool: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model (randomly initialised): `create_model("se_resnet50", num_classes=10, reduction=8)`.

    timm's signature: `model_name` may be timm's name of a senet network (`seresnet50`, `legacy_seresnet50`, with
    a pretrained `.tag`); `num_classes`, `in_chans`, `drop_rate`, `drop_path_rate` and the SE keywords go to
    the model; `global_pool` picks the head's pooling (avg, max, avgmax, catavgmax, ""); `features_only=True`
    gives the backbone whose forward returns the stage maps of `out_indices` (default all of
    `model.feature_info`) as a list (`senet.models.features.FeatureListNet`). `pretrained_cfg` (a tag or a
    dict) and `pretrained_cfg_overlay` update `model.pretrained_cfg`. Weights (`pretrained=True`,
    `checkpoint_path`) are `senet.create_model`'s: this function reads no files.
    """
    if pretrained or checkpoint_path:
        raise ConfigError(
            "senet.models.create_model builds networks only; senet.create_model(name, pretrained=True) or "
            "checkpoint_path=... loads weights"
        )
    check_features_only(features_only, out_indices)
    name, alias_kwargs = resolve_name(model_name)
    model = model_entrypoint(name)(**(alias_kwargs | kwargs))
    if global_pool is not None and hasattr(model, "reset_classifier"):
        model.reset_classifier(model.num_classes, global_pool)
    elif global_pool is not None:
        raise ConfigError(f"{name} has no classifier head, so global_pool does not apply")
    model.pretrained_cfg = default_pretrained_cfg(model_name, model, pretrained_cfg) | dict(pretrained_cfg_overlay or {})
    return with_features_only(model, features_only, out_indices)


def default_pretrained_cfg(name: str, model: nn.Module, pretrained_cfg: dict[str, Any] | str | None = None) -> dict[str, Any]:
    """timm's `pretrained_cfg` of a new model: the preprocessing and provenance of the weights the name
    stands for. senet's own names: source "senet", the paper's ImageNet recipe (Sec. 5.1: 224 crop of a
    256 side, bilinear); timm's names: timm's config of its default (or `.tag`) weights, `hf_hub_id`
    included; module names (first_conv, classifier) and num_classes are this model's."""
    base, _, tag = name.partition(".")
    if isinstance(pretrained_cfg, str):
        tag, pretrained_cfg = pretrained_cfg, None
    channels = int(getattr(model, "in_chans", 3))
    input_size = tuple(getattr(model, "default_input_size", (3, 224, 224)))
    info = getattr(model, "feature_info", None)
    reduction = int(info[-1]["reduction"]) if info else 32
    first_conv = next((n for n, m in model.named_modules() if isinstance(m, CONVS)), "")
    cfg: dict[str, Any] = {
        "architecture": base,
        "tag": None,
        "source": "senet",
        "url": "",
        "hf_hub_id": None,
        "num_classes": int(getattr(model, "num_classes", 0)),
        "input_size": input_size,
        "pool_size": tuple(max(1, side // reduction) for side in input_size[1:]),
        "crop_pct": 0.875,
        "crop_mode": "center",
        "interpolation": "bilinear",
        "mean": IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,) * channels,
        "std": IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,) * channels,
        "first_conv": first_conv,
        "classifier": "fc",
    }
    released = TIMM_PRETRAINED.get(base, [])
    if tag and not any(entry["tag"] == tag for entry in released):
        raise UnknownModelError(f"{base} has no pretrained tag {tag!r}; its tags: {', '.join(e['tag'] for e in released) or 'none'}")
    if base in TIMM_ALIASES:
        cfg["source"] = "timm"
        if released:
            entry = next(e for e in released if e["tag"] == tag) if tag else released[0]
            cfg |= {k: v for k, v in entry.items() if k not in ("num_classes", "first_conv", "classifier", "pool_size")}
            if channels != 3:
                cfg["mean"], cfg["std"] = (sum(cfg["mean"]) / 3,) * channels, (sum(cfg["std"]) / 3,) * channels
            cfg["input_size"] = (channels, *cfg["input_size"][1:])
    return cfg | dict(pretrained_cfg or {})


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
