"""Preprocessing from a model's `pretrained_cfg`, named as timm's: `resolve_data_config` and `create_transform`.

    config = senet.data.resolve_data_config(model=model)      # input_size, interpolation, mean, std, crop_pct, crop_mode
    transform = senet.data.create_transform(**config)         # PIL image / path / array -> normalised (C, H, W) tensor
    logits = model(transform(image).unsqueeze(0))

Built on senet's own transforms (`senet.data.transforms`, Pillow; no torchvision). Evaluation crops the
centre square of side crop_pct x the shorter side and resizes it to the input size in one step (the paper's
256 -> 224 for crop_pct 0.875); timm resizes the shorter side to floor(size / crop_pct) and then crops, which
lands within interpolation rounding of this (docs/model-api.md gives how close).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from senet.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from senet.data.images import RESAMPLING, Source
from senet.data.transforms import CROP_MODES, EvalTransform, TrainTransform
from senet.errors import ConfigError, check_choice

DEFAULT_CROP_PCT = 0.875  # the paper's 224 / 256 (Sec. 5.1)
_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def resolve_data_config(
    args: Mapping[str, Any] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    model: torch.nn.Module | None = None,
    use_test_size: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """timm's `resolve_data_config`: the preprocessing of `model` (its `pretrained_cfg`, or `pretrained_cfg`
    given), each key overridden by `args` where set there (`img_size` sets the side of `input_size`).
    Returns input_size (C, H, W), interpolation, mean, std, crop_pct, crop_mode."""
    args = dict(args or {})
    cfg = dict(pretrained_cfg or getattr(model, "pretrained_cfg", None) or {})
    channels = int(getattr(model, "in_chans", 3)) if model is not None else 3
    size = tuple(cfg.get("test_input_size") if use_test_size and cfg.get("test_input_size") else
                 cfg.get("input_size") or getattr(model, "default_input_size", (channels, 224, 224)))
    if args.get("input_size") is not None:
        size = tuple(args["input_size"])
    elif args.get("img_size") is not None:
        side = args["img_size"]
        size = (size[0], *((side, side) if isinstance(side, int) else tuple(side)))
    elif args.get("in_chans") is not None:
        size = (int(args["in_chans"]), *size[1:])
    crop_pct = cfg.get("test_crop_pct") if use_test_size and cfg.get("test_crop_pct") else cfg.get("crop_pct")
    config = {
        "input_size": size,
        "interpolation": cfg.get("interpolation") or "bilinear",
        "mean": tuple(cfg.get("mean") or (IMAGENET_MEAN if size[0] == 3 else (0.5,) * size[0])),
        "std": tuple(cfg.get("std") or (IMAGENET_STD if size[0] == 3 else (0.5,) * size[0])),
        "crop_pct": float(crop_pct or DEFAULT_CROP_PCT),
        "crop_mode": cfg.get("crop_mode") or "center",
    }
    for key in ("interpolation", "mean", "std", "crop_pct", "crop_mode"):
        if args.get(key) is not None:
            config[key] = tuple(args[key]) if key in ("mean", "std") else args[key]
    if verbose:
        print("data config: " + ", ".join(f"{k}={config[k]}" for k in _KEYS))
    return config


def resolve_model_data_config(
    model: torch.nn.Module,
    args: Mapping[str, Any] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    use_test_size: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """timm's `resolve_model_data_config`: `resolve_data_config` with the model first."""
    return resolve_data_config(args, pretrained_cfg, model, use_test_size, verbose)


@dataclass(frozen=True)
class ImageTransform:
    """An image (PIL, path or uint8 array) -> float (C, H, W) tensor: the geometric step (`geometry`, senet's
    EvalTransform or TrainTransform, uint8 in and out), then x / 255, then (x - mean) / std."""

    geometry: EvalTransform | TrainTransform
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalize: bool = True
    seed: int | None = None  # training augmentation: a fixed seed gives the same crops each run

    def __call__(self, image: Source | str) -> torch.Tensor:
        if isinstance(image, str):
            with Image.open(image) as opened:
                image = opened.convert(self.geometry.mode or "RGB")
        rng = np.random.default_rng(self.seed)
        array = self.geometry(image, rng)
        if array.ndim == 2:
            array = array[:, :, None]
        x = torch.from_numpy(np.array(array, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
        if not self.normalize:
            return x
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return (x - mean) / std


def create_transform(
    input_size: int | Sequence[int] = 224,
    is_training: bool = False,
    interpolation: str = "bilinear",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float | None = None,
    crop_mode: str | None = None,
    scale: Sequence[float] | None = None,
    ratio: Sequence[float] | None = None,
    hflip: float = 0.5,
    normalize: bool = True,
    **kwargs: Any,
) -> ImageTransform:
    """timm's `create_transform`: evaluation (`crop_mode` "center": the centre crop of `crop_pct` of the
    shorter side; "squash" and "border" as timm's, `EvalTransform`) or, with `is_training`, senet's
    ImageNet augmentation (random-size crop of `scale` / `ratio`, horizontal flip with probability `hflip`
    0 or 0.5). timm's other augmentation options
    (auto_augment, color_jitter, re_prob, ...) are not senet's and raise ConfigError when set."""
    unsupported = {k: v for k, v in kwargs.items() if v not in (None, False, 0, 0.0, "", "const", 1)}
    if unsupported:
        raise ConfigError(f"create_transform: {', '.join(sorted(unsupported))} not supported by senet's transforms")
    size = input_size if isinstance(input_size, int) else tuple(input_size)
    side = size if isinstance(size, int) else size[-1]
    if not isinstance(size, int) and size[-1] != size[-2]:
        raise ConfigError(f"senet's transforms make square inputs; got input_size {size}")
    channels = size[0] if not isinstance(size, int) and len(size) == 3 else len(mean)
    mode = {1: "L", 3: "RGB"}.get(channels)
    interpolation = next((name for name in RESAMPLING if str(interpolation).startswith(name)), "bilinear")
    crop_mode = check_choice("crop_mode", crop_mode or "center", CROP_MODES)
    if is_training:
        if hflip not in (0, 0.5):
            raise ConfigError(f"senet's training flip has probability 0.5 or 0, got hflip={hflip}")
        geometry: EvalTransform | TrainTransform = TrainTransform(
            side, scale=tuple(scale or (0.08, 1.0)), ratio=tuple(ratio or (3 / 4, 4 / 3)), flip=hflip > 0, mode=mode)
    else:
        fill = tuple(round(255 * v) for v in mean)  # (timm's border fill: the mean colour)
        geometry = EvalTransform(side, float(crop_pct or DEFAULT_CROP_PCT), mode=mode, interpolation=interpolation,
                                 crop_mode=crop_mode, fill=fill)
    return ImageTransform(geometry, tuple(mean), tuple(std), normalize, None if is_training else 0)
