"""`senet.load_model` and `senet convert`: any SE checkpoint -> the senet network it describes, loaded strictly.

The one loader of senet: a file is read safely (`weights.files`), recognised (`interop.sources`: which
library wrote it, which senet model and keywords it maps onto, its keys renamed; senet's own files are one
more source, their checkpoint record names the model), the network is built and the weights loaded
strictly (`weights.state.load_strict`): every key present, every shape equal. For fine-tuning, a different class count replaces the classifier
(`reset_classifier`) and a different input channel count adapts the first convolution as timm does
(`adapt_input_conv`). The model comes back in eval mode with its preprocessing as `model.pretrained_cfg`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from senet.data.images import RESAMPLING
from senet.errors import ConfigError, SenetError
from senet.options import IMAGENET_MEAN, IMAGENET_STD
from senet.interop.sources import AssumedSourceWarning, Recognised, recognise
from senet.models import create_model
from senet.models.features import check_features_only, with_features_only
from senet.weights.checkpoint import save_weights
from senet.weights.files import WeightsFile, read_weights
from senet.weights.record import DEFAULT_CROP_FRACTION, CheckpointRecord, plain
from senet.weights.state import load_strict


@dataclass
class Pretrained:
    """A loaded network, what it was recognised as, its preprocessing and what was adapted on loading."""

    model: nn.Module
    recognised: Recognised
    cfg: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    found: str = ""  # where in the file the weights were (a training checkpoint's key, a prefix removed)

    def record(self) -> CheckpointRecord:
        """senet's checkpoint record of this network (what `senet eval` and `load_model` rebuild it from)."""
        cfg = self.cfg
        return CheckpointRecord(
            model=cfg["model"],
            kwargs=cfg["kwargs"],
            classes=None if cfg["label_names"] is None else tuple(cfg["label_names"]),
            channels=cfg["input_size"][0],
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            input_size=cfg["input_size"][-1],
            eval_crop_fraction=cfg["crop_pct"],
            interpolation=cfg["interpolation"],
            source=cfg["source"],
            architecture=cfg["architecture"],
        )


def recognise_file(
    path: str | Path, *, source: str = "auto", model: str | None = None, ema: bool = False
) -> tuple[Recognised, WeightsFile]:
    """Read `path` and say what it is: senet's own files by their record, every other file by `recognise`."""
    weights = read_weights(path, ema=ema)
    record = weights.record
    if record is not None and source in ("auto", "senet"):
        if model is not None and model != record.model:
            raise ConfigError(f"{weights.path} holds a {record.model} (its metadata says so), not {model}; drop --model")
        preprocessing = {
            "mean": record.mean,
            "std": record.std,
            "input_size": record.input_size,
            "crop_pct": record.eval_crop_fraction,
            "interpolation": record.interpolation,
            "label_names": record.classes,
        }
        recognised = Recognised(
            source=record.source,
            architecture=record.architecture or record.model,
            model_name=record.model,
            model_kwargs=dict(record.kwargs),
            state_dict=weights.state_dict,
            preprocessing={k: v for k, v in preprocessing.items() if v is not None},
        )
        return recognised, weights
    if source == "senet" or (source == "auto" and model is not None and _has_keys_of(model, weights.state_dict)):
        if model is None:
            raise ConfigError(f"{weights.path} has senet's keys but no metadata naming the model; pass --model NAME")
        return Recognised("senet", model, model, _senet_kwargs(model, weights.state_dict), weights.state_dict, {}), weights
    prefer = "timm" if "models--timm--" in str(weights.path) else None  # timm's hub cache
    try:
        recognised = recognise(weights.state_dict, source=source, model=model, config=weights.config, prefer=prefer)
    except SenetError as error:  # say which file
        raise type(error)(f"{weights.path}: {error}") from None
    if recognised.assumed:
        warnings.warn(f"{weights.path}: {recognised.assumed}", AssumedSourceWarning, stacklevel=3)
    return recognised, weights


def _has_keys_of(model: str, state: dict[str, Tensor]) -> bool:
    """Whether `state` has exactly the keys of senet's `model` (a state dict saved from a senet network)."""
    with torch.device("meta"):
        return set(create_model(model).state_dict()) == set(state)


def _senet_kwargs(model: str, state: dict[str, Tensor]) -> dict[str, Any]:
    """num_classes and in_chans of a senet state dict without metadata, from its classifier and first convolution."""
    with torch.device("meta"):
        probe = create_model(model)
    expected = probe.state_dict()
    kwargs: dict[str, Any] = {}
    if "fc.weight" in state and "fc.weight" in expected and state["fc.weight"].shape[0] != expected["fc.weight"].shape[0]:
        kwargs["num_classes"] = int(state["fc.weight"].shape[0])
    first = next((k for k, v in expected.items() if v.dim() >= 3 and v.shape[1] == probe.in_chans), None)
    if first is not None and first in state and state[first].dim() >= 3 and state[first].shape[1] != probe.in_chans:
        kwargs["in_chans"] = int(state[first].shape[1])
    return kwargs


def load_pretrained(
    path: str | Path,
    *,
    source: str = "auto",
    model: str | None = None,
    ema: bool = False,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **kwargs: Any,
) -> Pretrained:
    """Build and strictly load the network in `path`; then adapt it to `num_classes` / `in_chans` if given.

    kwargs: further create_model keywords (e.g. drop_rate) on top of those the file implies.
    """
    recognised, weights = recognise_file(path, source=source, model=model, ema=ema)
    built, notes = build_network(recognised, weights.path, num_classes=num_classes, in_chans=in_chans, **kwargs)
    cfg = pretrained_cfg(recognised, weights, built, kwargs)
    built.eval()
    built.pretrained_cfg = {**getattr(built, "pretrained_cfg", {}), **cfg}  # timm's keys the file does not set stay
    return Pretrained(built, recognised, cfg, notes, weights.note)


def load_model(path: str | Path, *, source: str = "auto", model: str | None = None, **kwargs: Any) -> nn.Module:
    """The network a checkpoint describes, loaded strictly, in eval mode, with `model.pretrained_cfg`.

    path: a senet run folder, checkpoint folder or .safetensors file; a hub folder (config.json beside
    model.safetensors or pytorch_model.bin); a .safetensors, .pth, .pt, .bin or .pth.tar file from another
    library (bare state dict, DDP `module.` prefix, or a training checkpoint). source: the library that
    wrote it ("auto" detects it from the key names and shapes). model: the senet model name, where the keys
    leave it open. kwargs: `ema=True` for a checkpoint's EMA weights; `num_classes` / `in_chans` to replace
    the classifier / adapt the first convolution; any other create_model keyword.

    `model.pretrained_cfg` holds mean, std, input_size (C, H, W), crop_pct, interpolation, label_names
    (None where the file has none), source, architecture, model, kwargs and file.
    `features_only=True` (with `out_indices`) gives the loaded backbone's feature maps, as `create_model`.
    """
    features_only, out_indices = kwargs.pop("features_only", False), kwargs.pop("out_indices", None)
    check_features_only(features_only, out_indices)
    return with_features_only(load_pretrained(path, source=source, model=model, **kwargs).model, features_only, out_indices)


def load_for_evaluation(path: str | Path, *, ema: bool = False) -> tuple[nn.Module, CheckpointRecord, Path]:
    """(network, checkpoint record, file) of any checkpoint `load_model` reads, for `senet eval`, `senet
    analyze` and the demo: the network as the file's record (senet's own files) or its recognition (any
    other) describes it, loaded strictly; a foreign file gets the record a `senet convert` of it would carry."""
    recognised, weights = recognise_file(path, ema=ema)
    network, notes = build_network(recognised, weights.path)
    record = weights.record or Pretrained(network, recognised, pretrained_cfg(recognised, weights, network), notes).record()
    return network, record, weights.path


# ---------------------------------------------------------------------------------------------------


def build_network(
    recognised: Recognised, path: Path, *, num_classes: int | None = None, in_chans: int | None = None, **kwargs: Any
) -> tuple[nn.Module, list[str]]:
    """(network, notes): create `recognised.model_name`, load its state dict strictly, then adapt the input
    convolution and the classifier where `in_chans` / `num_classes` differ from the file's."""
    name = recognised.model_name
    model_kwargs = dict(recognised.model_kwargs) | kwargs
    with torch.device("meta"):
        probe = create_model(name, **model_kwargs)
    state, notes = dict(recognised.state_dict), []
    file_chans, file_classes = probe.in_chans, probe.num_classes
    if in_chans is not None and in_chans != file_chans:
        model_kwargs["in_chans"] = in_chans
        with torch.device("meta"):
            target = create_model(name, **model_kwargs).state_dict()
        adapted = [k for k, v in state.items() if _differs_in_input_channels(v, target.get(k), file_chans, in_chans)]
        if not adapted:
            raise ConfigError(f"{name} has no input convolution with {file_chans} channels to adapt to {in_chans}")
        for key in adapted:
            state[key] = adapt_input_conv(state[key], in_chans)
        how = "summed over its channels" if in_chans == 1 else "repeated and rescaled"
        notes.append(f"input convolution {adapted[0]} adapted from {file_chans} to {in_chans} channels (weights {how})")
    network = create_model(name, **model_kwargs)
    load_strict(network, state, f"the weights in {path}", f"{name}({_kwargs_text(model_kwargs)})",
                "check --model / --source and the model options")
    if num_classes is not None and num_classes != file_classes:
        if not hasattr(network, "reset_classifier"):
            raise ConfigError(f"{name} has no replaceable classifier; it keeps the file's {file_classes} classes")
        network.reset_classifier(num_classes)
        notes.append(f"classifier replaced: {file_classes} -> {num_classes} classes (new weights, to be trained)")
    return network, notes


def _differs_in_input_channels(value: Tensor, target: Tensor | None, old: int, new: int) -> bool:
    if target is None or value.dim() < 3 or value.shape == target.shape:
        return False
    return value.shape[1] == old and target.shape[1] == new and value.shape[:1] + value.shape[2:] == target.shape[:1] + target.shape[2:]


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """A first-convolution weight (O, I, k...) for `in_chans` input channels, as timm's adapt_input_conv:
    1 channel takes the sum over the I (RGB) channels; more repeat them cyclically, scaled by I / in_chans so
    that an input with equal channels gives the same activations."""
    dtype = weight.dtype
    weight = weight.float()
    old = weight.shape[1]
    if in_chans == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        repeats = -(-in_chans // old)
        adapted = weight.repeat(1, repeats, *([1] * (weight.dim() - 2)))[:, :in_chans] * (old / in_chans)
    return adapted.to(dtype)


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())


# ---------------------------------------------------------------------------------------------------


def pretrained_cfg(
    recognised: Recognised, weights: WeightsFile, network: nn.Module, extra_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The preprocessing and provenance of a loaded network (timm's pretrained_cfg keys where they exist);
    `kwargs` are the create_model keywords that rebuild it (the file's, `extra_kwargs`, classes and channels)."""
    pre = dict(recognised.preprocessing)
    config = weights.config or {}
    channels = int(network.in_chans)
    default = tuple(network.default_input_size)
    size = pre.get("input_size") or default[-1]
    side = int(size[-1] if isinstance(size, (list, tuple)) else size)
    mean, std = pre.get("mean"), pre.get("std")
    if mean is None or std is None:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if len(mean) != channels:  # adapted input channels: the mean statistic of the file's channels for each
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    labels = pre.get("label_names") or config.get("label_names")
    if labels is not None and len(labels) != getattr(network, "num_classes", len(labels)):
        labels = None  # a replaced classifier: the file's class names no longer apply
    # Pillow's filters by name ("bicubic" for timm's "bicubic"; anything unknown falls back to bilinear).
    interpolation = next((name for name in RESAMPLING if str(pre.get("interpolation", "")).startswith(name)), "bilinear")
    kwargs = dict(recognised.model_kwargs) | dict(extra_kwargs or {}) | {"num_classes": int(network.num_classes), "in_chans": channels}
    return {
        "source": recognised.source,
        "architecture": recognised.architecture,
        "model": recognised.model_name,
        "kwargs": plain(kwargs),
        "file": str(weights.path),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "input_size": [channels] + [side] * (len(default) - 1),
        "crop_pct": float(pre.get("crop_pct") or DEFAULT_CROP_FRACTION),
        "interpolation": interpolation,
        "label_names": list(labels) if labels is not None else None,
        "num_classes": int(network.num_classes),
        "description": recognised.describe(),
    }


def convert(
    src: str | Path, dst: str | Path, *, source: str = "auto", model: str | None = None, ema: bool = False, force: bool = False
) -> Pretrained:
    """Write the network in `src` as a senet .safetensors checkpoint `dst` (atomically; an existing `dst`
    only with `force`), loaded and checked first. Returns what was loaded."""
    dst = Path(dst).expanduser()
    if dst.suffix != ".safetensors":
        raise ConfigError(f"the converted checkpoint is a .safetensors file; name it {dst.with_suffix('.safetensors').name}")
    if dst.exists() and not force:
        raise ConfigError(f"{dst} already exists; choose another name or pass --force to replace it")
    if not dst.parent.is_dir():
        raise ConfigError(f"folder {dst.parent} does not exist; create it first")
    loaded = load_pretrained(src, source=source, model=model, ema=ema)
    save_weights(dst, loaded.model.state_dict(), loaded.record())
    return loaded
