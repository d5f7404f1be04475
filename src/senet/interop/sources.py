"""Recognise another library's SE checkpoint and map it onto a registered senet model, exactly.

Given a state dict (and optionally a hub `config.json` dict), `recognise` finds the library it came from
(the source), the peer's architecture, the registered senet model and keywords that compute the same
function, and the state dict renamed to senet's keys:

    r = recognise(torch.load("legacy_seresnet50.pth", weights_only=True))
    model = create_model(r.model_name, **r.model_kwargs)
    model.load_state_dict(r.state_dict, strict=True)        # the peer's logits, to float rounding

Sources (`SOURCES`), told apart by key names and shapes:

- ``timm-legacy``: the official release as pretrainedmodels and timm's `legacy_*` models hold it (`layer0.*`,
  `se_module.fc1/fc2`, `last_linear`): paper layout (stride on the first 1x1 of SE-ResNet bottlenecks,
  ceil-mode stem pool); the legacy SE-ResNet-18/34 have a ReLU before SE (`relu_before_se`).
- ``timm``: timm's `resnet.py` (`seresnet*`, `seresnext*`, `senet154`, plain `resnet*` / `resnext*`; deep
  stems `conv1.0..6`, ResNet-D shortcuts `downsample.1/2`, SE widths rounded to 8) and `mobilenetv3_*_100`.
- ``torchvision``: `resnet*`, `resnext*`, `wide_resnet*`, `mobilenet_v3_large/small` (BN eps 1e-3).
- ``senet.pytorch``: SE as bias-free Linear layers `se.fc.0` / `se.fc.2` on the torchvision ResNet layout,
  and its CIFAR SE-ResNets (1x1-conv-BN shortcuts, the literal C // 16 bottleneck).

The architecture comes from the shapes: the renamed keys and shapes are compared with those of every
registered model of the family (built on the meta device, so nothing is allocated), and the SE widths give
`reduction` and its rounding. Nothing here reads files (see `senet.interop` for loading them).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from senet.errors import ConfigError, SenetError, did_you_mean
from senet.layers import se_hidden_channels
from senet.models.registry import create_model, is_se_model, list_models
from senet.options import SOURCES

_SAME_NETWORK = {"timm", "torchvision"}  # sources whose plain ResNet files are one network, two preprocessings

# How each source's files look, for the error that lists what is known.
SOURCE_KEYS = {
    "timm-legacy": "layer0.conv1, layer1.0.se_module.fc1, last_linear",
    "timm": "conv1 or conv1.0..6, layer1.0.se.fc1, fc; conv_stem, blocks.0.0.conv_dw, conv_head, classifier",
    "torchvision": "conv1, layer1.0.conv1, fc; features.0.0, features.1.block.0.0, classifier.3",
    "senet.pytorch": "conv1, layer1.0.se.fc.0 (Linear, no bias), fc",
}

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "input_size": (3, 224, 224)}


class UnrecognisedCheckpointError(SenetError):
    """A state dict whose keys fit no known source, or whose shapes fit no registered model."""


class AmbiguousCheckpointError(SenetError):
    """A state dict whose keys fit several sources that differ in what they compute or how they preprocess."""


class AssumedSourceWarning(UserWarning):
    """A state dict whose keys fit several sources with the same network: the one assumed (for its
    preprocessing) and how to choose another."""


class StateDictMismatchError(SenetError):
    """A state dict that does not fit the model it names (shapes, missing or extra tensors)."""


@dataclass(frozen=True)
class Recognised:
    """What `recognise` found: the source, the peer's architecture, the senet model that computes the same
    function and the state dict renamed to its keys (`create_model(model_name, **model_kwargs)` loads it
    strictly), with the preprocessing the source's checkpoints expect (empty where unknown)."""

    source: str
    architecture: str
    model_name: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, Tensor] = field(repr=False)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    assumed: str = ""  # where the keys fit several sources alike: which was assumed, and why

    def describe(self) -> str:
        """`timm legacy_seresnet50 -> se_resnet50 (layout=paper), 322 tensors`."""
        label = "timm" if self.source == "timm-legacy" else self.source
        options = ", ".join(f"{k}={v}" for k, v in self.model_kwargs.items())
        options = f" ({options})" if options else ""
        return f"{label} {self.architecture} -> {self.model_name}{options}, {len(self.state_dict)} tensors"


# ---------------------------------------------------------------------------------------------------
# Renaming each source's keys to senet's. A renamer returns {senet key: source key} (in source order) and
# the senet model family to search; shapes are left alone (`_fit` reshapes Linear <-> 1x1 conv).

_Renaming = tuple[dict[str, str], str]


def _rename(keys: list[str], rules: list[tuple[str, str]]) -> dict[str, str]:
    renamed: dict[str, str] = {}
    for key in keys:
        new = key
        for pattern, replacement in rules:
            new = re.sub(pattern, replacement, new)
        renamed[new] = key
    return renamed


def _resnet_stem_rules(keys: list[str]) -> list[tuple[str, str]]:
    """timm / torchvision stem names -> senet's `stem.*`: `conv1`, `bn1`, or timm's deep stem
    `conv1.0/1/3/4/6` + `bn1` (three 3x3 convs; the last BN sits outside the Sequential)."""
    if "conv1.0.weight" in keys:
        return [
            (r"^conv1\.0\.", "stem.conv1."), (r"^conv1\.1\.", "stem.bn1."), (r"^conv1\.3\.", "stem.conv2."),
            (r"^conv1\.4\.", "stem.bn2."), (r"^conv1\.6\.", "stem.conv3."), (r"^bn1\.", "stem.bn3."),
        ]
    return [(r"^conv1\.", "stem.conv1."), (r"^bn1\.", "stem.bn1.")]


def _rename_timm_legacy(keys: list[str]) -> _Renaming:
    rules = [(r"^layer0\.", "stem."), (r"\.se_module\.", ".se."), (r"^last_linear\.", "fc.")]
    return _rename(keys, rules), "resnet"


def _rename_resnet(keys: list[str]) -> _Renaming:
    """timm `resnet.py`, torchvision and senet.pytorch ResNets: the same names as senet's but the stem and
    senet.pytorch's Linear SE (`se.fc.0`, `se.fc.2`); CIFAR networks (three stages) map onto `cifar`."""
    se_rules = [(r"\.se\.fc\.0\.", ".se.fc1."), (r"\.se\.fc\.2\.", ".se.fc2.")]
    if not any(k.startswith("layer4.") for k in keys):  # a CIFAR ResNet: stem conv1-bn1, three stages
        return _rename(keys, [(r"^conv1\.", "stem.0."), (r"^bn1\.", "stem.1."), *se_rules]), "cifar"
    return _rename(keys, _resnet_stem_rules(keys) + se_rules), "resnet"


def _rename_timm_mobilenetv3(keys: list[str]) -> _Renaming:
    """timm's MobileNetV3: `conv_stem`/`bn1`, `blocks.{stage}.{i}` (depthwise-separable: conv_dw, bn1, se,
    conv_pw, bn2; inverted residual: conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3; the last stage a
    conv-BN), `conv_head` (a 1x1 conv on the pooled vector) and `classifier`."""
    blocks = sorted({tuple(map(int, m.groups())) for k in keys if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))})
    flat = {block: index for index, block in enumerate(blocks)}
    inverted = {b for b in blocks if f"blocks.{b[0]}.{b[1]}.conv_pwl.weight" in keys}
    last = blocks[-1] if blocks and f"blocks.{blocks[-1][0]}.{blocks[-1][1]}.conv.weight" in keys else None
    renamed: dict[str, str] = {}
    for key in keys:
        new = key
        if m := re.match(r"blocks\.(\d+)\.(\d+)\.(.*)", key):
            block, rest = (int(m.group(1)), int(m.group(2))), m.group(3)
            if block == last:
                new = "conv_last." + re.sub(r"^conv\.", "conv.", re.sub(r"^bn1\.", "bn.", rest))
            else:
                parts = (
                    {"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "dw.conv", "bn2": "dw.bn",
                     "conv_pwl": "project.conv", "bn3": "project.bn"}
                    if block in inverted
                    else {"conv_dw": "dw.conv", "bn1": "dw.bn", "conv_pw": "project.conv", "bn2": "project.bn"}
                )
                parts |= {"se.conv_reduce": "se.fc1", "se.conv_expand": "se.fc2"}
                module, _, tensor = rest.rpartition(".")
                new = f"blocks.{flat[block]}.{parts.get(module, module)}.{tensor}"
        else:
            for pattern, replacement in [(r"^conv_stem\.", "stem.conv."), (r"^bn1\.", "stem.bn."),
                                         (r"^conv_head\.", "head_hidden.0."), (r"^classifier\.", "fc.")]:
                new = re.sub(pattern, replacement, new)
        renamed[new] = key
    return renamed, "mobilenet"


def _rename_torchvision_mobilenetv3(keys: list[str]) -> _Renaming:
    """torchvision's MobileNetV3: `features.0` the stem (conv `.0`, BN `.1`), `features.1..n-2` inverted
    residuals whose `block.{j}` are [expansion], depthwise, [SE fc1/fc2], projection, `features.{n-1}` the
    last conv-BN, `classifier.0` / `classifier.3` the two linear layers."""
    features = sorted({int(m.group(1)) for k in keys if (m := re.match(r"features\.(\d+)\.", k))})
    convs: dict[int, list[int]] = {}  # feature index -> the block.{j} that are conv-BN pairs
    for key in keys:
        if c := re.match(r"features\.(\d+)\.block\.(\d+)\.0\.weight$", key):
            convs.setdefault(int(c.group(1)), []).append(int(c.group(2)))
    renamed: dict[str, str] = {}
    for key in keys:
        new = key
        if m := re.match(r"features\.(\d+)\.(.*)", key):
            index, rest = int(m.group(1)), m.group(2)
            if index == features[0] or index == features[-1]:
                module = "stem" if index == features[0] else "conv_last"
                new = f"{module}." + re.sub(r"^0\.", "conv.", re.sub(r"^1\.", "bn.", rest))
            elif b := re.match(r"block\.(\d+)\.(.*)", rest):
                pairs = sorted(convs.get(index, []))
                names = dict(zip(pairs, ["expand", "dw", "project"] if len(pairs) == 3 else ["dw", "project"]))
                j, tail = int(b.group(1)), b.group(2)
                if j in names:
                    new = f"blocks.{index - 1}.{names[j]}." + re.sub(r"^0\.", "conv.", re.sub(r"^1\.", "bn.", tail))
                else:  # the SE block (fc1, fc2)
                    new = f"blocks.{index - 1}.se.{tail}"
        else:
            new = re.sub(r"^classifier\.0\.", "head_hidden.0.", re.sub(r"^classifier\.3\.", "fc.", new))
        renamed[new] = key
    return renamed, "mobilenet"


# ---------------------------------------------------------------------------------------------------
# The sources: which keys they claim, how they rename, what else their network needs.


def _has(keys: list[str], pattern: str) -> bool:
    return any(re.search(pattern, k) for k in keys)


def _resnet_like(keys: list[str]) -> bool:
    return "layer1.0.conv1.weight" in keys and ("conv1.weight" in keys or "conv1.0.weight" in keys)


def _timm_name(model_name: str) -> str:
    """senet's name in timm's spelling: se_resnext26d_32x4d -> seresnext26d_32x4d; mobilenet_v3_large ->
    mobilenetv3_large_100."""
    if model_name.startswith("mobilenet_v3_"):
        return "mobilenetv3_" + model_name.removeprefix("mobilenet_v3_") + "_100"
    return re.sub(r"^se_", "se", model_name)


def _same(model_name: str) -> str:
    return model_name


@dataclass(frozen=True)
class _Source:
    name: str
    claims: Callable[[list[str]], bool]
    rename: Callable[[list[str]], _Renaming]
    architecture: Callable[[str], str]  # the peer's name of a senet model
    resnet_layout: str = "torchvision"
    se_divisors: tuple[int, ...] = (1, 8)  # SE width roundings to try, the source's own first
    extra_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by family


def _rename_timm(keys: list[str]) -> _Renaming:
    return _rename_timm_mobilenetv3(keys) if "conv_stem.weight" in keys else _rename_resnet(keys)


def _rename_torchvision(keys: list[str]) -> _Renaming:
    return _rename_torchvision_mobilenetv3(keys) if "features.0.0.weight" in keys else _rename_resnet(keys)


_SOURCES = {
    "timm-legacy": _Source(
        "timm-legacy",
        claims=lambda keys: "layer0.conv1.weight" in keys and (_has(keys, r"\.se_module\.") or "last_linear.weight" in keys),
        rename=_rename_timm_legacy,
        architecture=lambda name: "legacy_" + _timm_name(name),
        resnet_layout="paper",
    ),
    "timm": _Source(
        "timm",
        claims=lambda keys: (
            (_resnet_like(keys) and not _has(keys, r"\.se\.fc\.\d\.") and not _has(keys, r"\.se_module\."))
            or ("conv_stem.weight" in keys and _has(keys, r"^blocks\.0\.0\.conv_dw\."))
        ),
        rename=_rename_timm,
        architecture=_timm_name,
        se_divisors=(8, 1),
    ),
    "torchvision": _Source(
        "torchvision",
        claims=lambda keys: (
            (_resnet_like(keys) and "conv1.weight" in keys and not _has(keys, r"\.se[._]"))
            or ("features.0.0.weight" in keys and _has(keys, r"^features\.\d+\.block\."))
        ),
        rename=_rename_torchvision,
        architecture=_same,
        se_divisors=(8, 1),
        extra_kwargs={"mobilenet": {"bn_eps": 1e-3, "bn_momentum": 0.01}},
    ),
    "senet.pytorch": _Source(
        "senet.pytorch",
        claims=lambda keys: _resnet_like(keys) and _has(keys, r"\.se\.fc\.0\.weight$"),
        rename=_rename_resnet,
        architecture=_same,
        extra_kwargs={"cifar": {"shortcut": "B"}},
    ),
}
assert tuple(_SOURCES) == SOURCES


# ---------------------------------------------------------------------------------------------------
# Preprocessing each source's published checkpoints expect (timm's default pretrained configs and
# torchvision's default weights' transforms, as those libraries state them).

_TIMM_CROP_095 = {"seresnet50", "seresnext101_32x8d", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                  "resnext50_32x4d", "resnext101_64x4d"}
_TIMM_BILINEAR = {"legacy_seresnet34", "legacy_seresnet50", "legacy_seresnet101", "legacy_seresnet152",
                  "legacy_seresnext50_32x4d", "legacy_seresnext101_32x4d", "legacy_senet154", "resnext101_32x4d",
                  "resnext101_32x8d"}
_TORCHVISION_RESIZE_256 = {"resnet18", "resnet34", "mobilenet_v3_small"}


def _preprocessing(source: str, architecture: str, family: str) -> dict[str, Any]:
    if source in ("timm", "timm-legacy"):
        return IMAGENET | {
            "crop_pct": 0.95 if architecture in _TIMM_CROP_095 else 0.875,
            "interpolation": "bilinear" if architecture in _TIMM_BILINEAR else "bicubic",
        }
    if source == "torchvision":
        resize = 256 if architecture in _TORCHVISION_RESIZE_256 else 232
        return IMAGENET | {"crop_pct": 224 / resize, "interpolation": "bilinear"}
    if family == "cifar":  # senet.pytorch's CIFAR models: only the input size is known
        return {"input_size": (3, 32, 32)}
    return IMAGENET | {"crop_pct": 0.875, "interpolation": "bilinear"}  # senet.pytorch: torchvision's recipe


# ---------------------------------------------------------------------------------------------------
# Matching shapes against the registered models.

Shapes = dict[str, tuple[int, ...]]
_FIRST_CONVS = ("stem.conv1.weight", "stem.0.weight", "stem.conv.weight")  # their dim 1 is in_chans
_CLASSIFIER = ("fc.weight", "fc.bias")


def _trim(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without trailing 1s: a Linear weight (o, i) and a 1x1 conv weight (o, i, 1, 1) compare equal."""
    while len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _is_se(key: str) -> bool:
    return ".se." in key


def _structure(shapes: Shapes) -> frozenset[tuple[str, tuple[int, ...]]]:
    """What fixes the architecture: every key and shape except SE widths, the classifier and in_chans."""
    out = set()
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked") or key in _CLASSIFIER:
            continue
        if _is_se(key):  # an SE block is here; its widths and biases are SE keywords
            out.add((key.split(".se.")[0] + ".se", ()))
        elif key in _FIRST_CONVS:
            out.add((key, (shape[0], -1) + shape[2:]))
        else:
            out.add((key, _trim(shape)))
    return frozenset(out)


def _model_shapes(name: str, kwargs: Mapping[str, Any] | None = None) -> tuple[Shapes, Any, int]:
    """(state-dict shapes, SE config, num_classes) of a registered model, built on the meta device."""
    with torch.device("meta"):
        model = create_model(name, **dict(kwargs or {}))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return shapes, getattr(model, "se_config", None), getattr(model, "num_classes", 0)


@functools.cache
def _family_index(family: str, options: tuple[tuple[str, Any], ...] = ()) -> dict[str, frozenset]:
    """The structure of every registered 2-D model of `family` that takes the keywords `options`."""
    index = {}
    for name in list_models(family=family):
        if re.search(r"_[13]d$", name):
            continue
        try:
            index[name] = _structure(_model_shapes(name, dict(options))[0])
        except SenetError:  # a model without these options (MobileNet v1 has no bn_eps)
            continue
    return index


def _se_blocks(shapes: Shapes) -> list[tuple[int, int]]:
    """(channels, hidden width) of each SE block, from its first FC's weight."""
    return [(shape[1], shape[0]) for key, shape in shapes.items() if key.endswith(".se.fc1.weight")]


def _se_kwargs(shapes: Shapes, keys: set[str], default: Any, divisors: tuple[int, ...]) -> dict[str, Any]:
    """The SE keywords (reduction, se_divisor, se_min_channels, se_bias) that give the SE widths in `shapes`,
    as far as they differ from the model's defaults `default` (an SEConfig)."""
    blocks = _se_blocks(shapes)
    if not blocks or default is None:
        return {}
    ratio = max(c / h for c, h in blocks)
    reduction: float = round(ratio) if abs(ratio - round(ratio)) < 1e-9 else ratio
    found: dict[str, Any] | None = None
    for divisor in dict.fromkeys((*divisors, default.divisor)):  # the source's rounding first
        for minimum in dict.fromkeys((default.min_channels, 1)):
            if all(se_hidden_channels(c, reduction, divisor=divisor, min_channels=minimum) == h for c, h in blocks):
                found = {"reduction": reduction, "se_divisor": divisor, "se_min_channels": minimum}
                break
        if found:
            break
    if found is None:
        return {}  # no rounding explains the widths: `_fit` names the SE shapes that differ
    found["se_bias"] = any(k.endswith(".se.fc1.bias") for k in keys)
    defaults = {"reduction": default.reduction, "se_divisor": default.divisor,
                "se_min_channels": default.min_channels, "se_bias": default.bias}
    return {k: v for k, v in found.items() if v != defaults[k]}


def _fit(name: str, kwargs: dict[str, Any], renamed: dict[str, str], state_dict: Mapping[str, Tensor],
         ) -> dict[str, Tensor]:
    """The renamed state dict for `create_model(name, **kwargs)`, reshaped where a Linear weight stands for
    a 1x1 conv (or back), with `num_batches_tracked` filled in; StateDictMismatchError if it does not fit."""
    expected, _, _ = _model_shapes(name, kwargs)
    described = f"{name}" + (f" ({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else "")
    bad = []
    out: dict[str, Tensor] = {}
    for key, source_key in renamed.items():
        tensor = state_dict[source_key]
        if key not in expected:
            continue
        shape = expected[key]
        if tuple(tensor.shape) != shape:
            if _trim(tuple(tensor.shape)) == _trim(shape):
                tensor = tensor.reshape(shape)
            else:
                bad.append(f"{source_key} has shape {tuple(tensor.shape)} in the state dict but {key} is {shape} "
                           f"in the model")
                continue
        out[key] = tensor
    if bad:
        more = f" (and {len(bad) - 2} more)" if len(bad) > 2 else ""
        raise StateDictMismatchError(f"the state dict does not fit {described}: {'; '.join(bad[:2])}{more}")
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in expected if k not in out]
    extra = [renamed_key for renamed_key in renamed if renamed_key not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"it lacks {len(missing)} tensors the model has ({', '.join(missing[:3])}"
                         f"{', ...' if len(missing) > 3 else ''})")
        if extra:
            parts.append(f"it has {len(extra)} tensors the model does not "
                         f"({', '.join(renamed[k] for k in extra[:3])}{', ...' if len(extra) > 3 else ''})")
        raise StateDictMismatchError(f"the state dict does not fit {described}: {'; '.join(parts)}")
    return {k: out[k] for k in expected}  # the model's order


def _key_patterns(keys: list[str], limit: int = 6) -> str:
    """The distinct key shapes, digits folded: `layer{n}.{n}.conv{n}, fc`."""
    patterns = dict.fromkeys(re.sub(r"\d+", "{n}", k.rsplit(".", 1)[0]) for k in keys)
    shown = list(patterns)[:limit]
    return ", ".join(shown) + (f", ... ({len(patterns)} patterns)" if len(patterns) > limit else "")


def _unrecognised(keys: list[str], why: str) -> UnrecognisedCheckpointError:
    known = "; ".join(f"{name} ({pattern})" for name, pattern in SOURCE_KEYS.items())
    return UnrecognisedCheckpointError(
        f"unrecognised architecture: {why}; the state dict has keys like {_key_patterns(keys)}; "
        f"known sources: {known}"
    )


def _find_model(renamed_shapes: Shapes, family: str, options: tuple[tuple[str, Any], ...]) -> str | None:
    structure = _structure(renamed_shapes)
    has_se = any(_is_se(k) for k in renamed_shapes)
    for name, candidate in _family_index(family, options).items():
        if candidate == structure and is_se_model(name) == has_se:  # (an SE model's twin differs in SE only)
            return name
    return None


def _closest_model(renamed_shapes: Shapes, family: str, options: tuple[tuple[str, Any], ...]) -> str | None:
    """A registered model with exactly these keys (but other shapes), for the shape-mismatch message."""
    keys = {k for k, _ in _structure(renamed_shapes)}
    for name, candidate in _family_index(family, options).items():
        if {k for k, _ in candidate} == keys:
            return name
    return None


def _check_source(source: str) -> str:
    if source != "auto" and source not in _SOURCES:
        raise ConfigError(
            f"unknown source {source!r}{did_you_mean(source, SOURCES)}; choose one of: auto, {', '.join(SOURCES)}"
        )
    return source


def recognise(
    state_dict: Mapping[str, Tensor],
    *,
    source: str = "auto",
    model: str | None = None,
    config: Mapping[str, Any] | None = None,
    prefer: str | None = None,
) -> Recognised:
    """Find where `state_dict` comes from and map it onto a registered senet model (module docstring).

    `source`: one of `SOURCES`, or "auto" to tell it from the keys (needed only where the keys fit several
    sources that differ). `model`: the senet model to map onto, instead of the one the shapes give.
    Plain ResNets fit timm's and torchvision's keys alike and are the same network either way: `prefer`
    (a hint from where the file was found), else torchvision, gives the preprocessing, and
    `Recognised.assumed` says so.
    `config`: a hub `config.json` (its `architecture` picks timm or timm-legacy and is checked, its
    `pretrained_cfg` gives the preprocessing). Raises a one-line SenetError for an unknown source, an
    unrecognised architecture, an ambiguous one, or shapes that do not fit.
    """
    _check_source(source)
    auto, assumed = source == "auto", ""
    keys = [k for k, v in state_dict.items() if isinstance(v, Tensor)]
    if not keys:
        raise UnrecognisedCheckpointError("the state dict holds no tensors; is this a checkpoint of weights?")
    hub_architecture = None
    if config and isinstance(config.get("architecture"), str):
        hub_architecture = config["architecture"].split(".")[0]
    if source == "auto":
        claiming = [name for name, s in _SOURCES.items() if s.claims(keys)]
        if hub_architecture is not None:
            hub_source = "timm-legacy" if hub_architecture.startswith("legacy_") else "timm"
            claiming = [hub_source] if hub_source in claiming or not claiming else claiming
        if not claiming:
            raise _unrecognised(keys, "its keys fit no known source")
        if set(claiming) == _SAME_NETWORK:  # plain ResNets: only the preprocessing differs
            source = prefer if prefer in _SAME_NETWORK else "torchvision"
            other = next(iter(_SAME_NETWORK - {source}))
            why = "where the file was found" if prefer in _SAME_NETWORK else "the more common source of plain ResNet files"
            assumed = (f"the keys fit timm's and torchvision's ResNets alike (the same network); assumed {source}'s "
                       f"preprocessing ({why}); pass source={other!r} (--source {other}) if it came from {other}")
            claiming = [source]
        if len(claiming) > 1:
            raise AmbiguousCheckpointError(
                f"the keys fit {' and '.join(repr(c) for c in claiming)} checkpoints alike (the same network, "
                f"different preprocessing); pass source={claiming[0]!r} (--source {claiming[0]}) or another of them"
            )
        source = claiming[0]
    spec = _SOURCES[source]
    renamed, family = spec.rename(keys)
    renamed_shapes = {k: tuple(state_dict[v].shape) for k, v in renamed.items()}

    options = tuple(sorted(spec.extra_kwargs.get(family, {}).items()))
    forced = model is not None
    if model is None:
        model = _find_model(renamed_shapes, family, options)
        if model is None:
            closest = _closest_model(renamed_shapes, family, options)
            if closest is None:
                raise _unrecognised(keys, f"no registered senet model has the {source} keys and shapes it holds")
            model = closest  # _fit names the shapes that differ
    defaults, se_default, default_classes = _model_shapes(model)
    kwargs: dict[str, Any] = {}
    model_family = "resnet" if "stem.conv1.weight" in defaults else family
    if model_family == "resnet":
        kwargs["layout"] = spec.resnet_layout
        basic_blocks = not any(k.endswith(".conv3.weight") for k in defaults)
        if source == "timm-legacy" and basic_blocks and se_default is not None:
            kwargs["relu_before_se"] = True  # timm's legacy basic block (SE-ResNet-18/34): relu(bn2) before SE
    kwargs |= spec.extra_kwargs.get(model_family, {})
    kwargs |= _se_kwargs(renamed_shapes, set(renamed), se_default, spec.se_divisors)
    classes = renamed_shapes["fc.weight"][0] if "fc.weight" in renamed_shapes else 0
    if classes != default_classes:
        kwargs["num_classes"] = classes
    first = next((k for k in _FIRST_CONVS if k in renamed_shapes), None)
    if first is not None and renamed_shapes[first][1] != 3:
        kwargs["in_chans"] = renamed_shapes[first][1]
    fitted = _fit(model, kwargs, renamed, state_dict)

    architecture = spec.architecture(model)
    if hub_architecture is not None and hub_architecture != architecture and not forced:
        raise StateDictMismatchError(
            f"config.json names architecture {hub_architecture!r} but the weights are {source}'s "
            f"{architecture!r}; fix config.json or pass model=... (--model)"
        )
    preprocessing = _preprocessing(source, architecture, model_family)
    if config and isinstance(config.get("pretrained_cfg"), Mapping):
        cfg = config["pretrained_cfg"]
        for key in ("mean", "std", "input_size", "crop_pct", "interpolation"):
            if key in cfg:
                preprocessing[key] = tuple(cfg[key]) if isinstance(cfg[key], list) else cfg[key]
    return Recognised(source, architecture, model, kwargs, fitted, preprocessing, assumed if auto else "")
