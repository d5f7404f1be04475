"""Training augmentation and evaluation preprocessing (paper Sec. 5.1 and 6.1), without torchvision.

- ImageNet training: random-size crop (8%-100% of the area, aspect ratio 3/4-4/3) to the input size and
  a random horizontal flip. Evaluation: resize the shorter side to input/0.875 (256 for 224) and take
  the centre crop.
- CIFAR training: pad 4 pixels with zeros, take a random crop of the original size, flip.

Transforms take a source image and a `numpy.random.Generator` and return a uint8 (H, W, C) array; the
generator is derived from (seed, epoch, sample index), so augmentation is reproducible whatever the
number of loader workers, and a resumed run sees exactly the crops the uninterrupted one would.
Normalisation happens later, on the device, on whole batches (`senet.data.loader.Normalize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from senet.data.images import RESAMPLING, Box, Source, crop_resize, source_size
from senet.errors import ConfigError, check_choice

TRAIN_TRANSFORMS = ("random_resized_crop", "pad_crop", "resize")
CROP_MODES = ("center", "squash", "border")  # timm's evaluation crops (EvalTransform)


def random_resized_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> Box:
    """A random box covering `scale` of the area with aspect ratio in `ratio` (log-uniform).

    Ten tries as in Szegedy et al.'s "random-size crop"; if none fits, the centre crop with the aspect
    ratio clamped to `ratio`.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return (left, top, left + w, top + h)
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return (left, top, left + w, top + h)


def center_box(width: int, height: int, size: int, crop_fraction: float) -> Box:
    """The box that "resize the shorter side to size / crop_fraction, then centre-crop size" keeps."""
    side = min(width, height) * crop_fraction
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def pad_crop(image: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad `pad` pixels on every side and crop back to the original size at a random offset."""
    if pad <= 0:
        return image
    height, width = image.shape[:2]
    dy, dx = rng.integers(0, 2 * pad + 1, size=2)
    out = np.zeros_like(image)
    # The crop window starts at (dy, dx) of the padded image, i.e. at (dy - pad, dx - pad) of the original.
    y0, x0 = int(dy) - pad, int(dx) - pad
    src_y, src_x = slice(max(0, y0), min(height, height + y0)), slice(max(0, x0), min(width, width + x0))
    dst_y, dst_x = slice(max(0, -y0), min(height, height - y0)), slice(max(0, -x0), min(width, width - x0))
    out[dst_y, dst_x] = image[src_y, src_x]
    return out


@dataclass(frozen=True)
class TrainTransform:
    """Training augmentation: a geometric step (`kind`) to `size` x `size`, then an optional flip.

    kind: ``random_resized_crop`` (ImageNet, Sec. 5.1), ``pad_crop`` (CIFAR: resize to `size` if needed,
    pad `pad`, random crop) or ``resize`` (resize only).
    """

    size: int
    kind: str = "random_resized_crop"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    pad: int = 4
    flip: bool = True
    mode: str | None = None

    def __post_init__(self) -> None:
        check_choice("train_transform", self.kind, TRAIN_TRANSFORMS)
        if self.size < 1:
            raise ConfigError(f"input size must be >= 1, got {self.size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"crop scale must satisfy 0 < min <= max <= 1, got {tuple(self.scale)}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"crop ratio must satisfy 0 < min <= max, got {tuple(self.ratio)}")

    def __call__(self, image: Source, rng: np.random.Generator) -> np.ndarray:
        width, height = source_size(image)
        if self.kind == "random_resized_crop":
            box = random_resized_box(width, height, self.scale, self.ratio, rng)
        else:
            box = (0, 0, width, height)
        out = crop_resize(image, box, (self.size, self.size), self.mode)
        if self.kind == "pad_crop":
            out = pad_crop(out, self.pad, rng)
        if self.flip and rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)


@dataclass(frozen=True)
class EvalTransform:
    """Evaluation: resize the shorter side to size / crop_fraction and take the centre size x size crop.

    crop_fraction 0.875 is the paper's 256 -> 224; 1.0 resizes the whole (square) image, as for CIFAR.
    interpolation: bilinear (senet's training), or bicubic / nearest where a checkpoint's preprocessing says so.
    crop_mode (timm's): "center" as above; "squash": each side resized to size / crop_fraction (the aspect
    ratio changes), then the centre crop; "border": the longer side resized to size / crop_fraction, then
    the centre crop, padded with `fill` (RGB, 0-255) where the image is narrower than the crop.
    """

    size: int
    crop_fraction: float = 0.875
    mode: str | None = None
    interpolation: str = "bilinear"
    crop_mode: str = "center"
    fill: tuple[int, ...] = (0, 0, 0)

    def __post_init__(self) -> None:
        if not 0 < self.crop_fraction <= 1:
            raise ConfigError(f"eval crop fraction must be in (0, 1], got {self.crop_fraction}")
        check_choice("interpolation", self.interpolation, tuple(RESAMPLING))
        check_choice("crop_mode", self.crop_mode, CROP_MODES)

    def __call__(self, image: Source, rng: np.random.Generator | None = None) -> np.ndarray:
        width, height = source_size(image)
        if self.crop_mode == "center":
            box = center_box(width, height, self.size, self.crop_fraction)
            return np.ascontiguousarray(crop_resize(image, box, (self.size, self.size), self.mode, self.interpolation))
        if self.crop_mode == "squash":  # each side to floor(size / crop_fraction), the centre size kept (timm's)
            kept = self.size / math.floor(self.size / self.crop_fraction)
            box = (width * (1 - kept) / 2, height * (1 - kept) / 2, width * (1 + kept) / 2, height * (1 + kept) / 2)
            return np.ascontiguousarray(crop_resize(image, box, (self.size, self.size), self.mode, self.interpolation))
        # border: the longer side resized to floor(size / crop_fraction) and the image centred on a
        # size x size canvas of `fill`, cropped where it is larger (timm's steps and roundings, one resampling)
        resized = math.floor(self.size / self.crop_fraction)
        box, place = [], []
        for length in (width, height):
            scaled = round(length * resized / max(width, height))
            if scaled <= self.size:  # padded: all of the image along this axis
                box.append((0.0, float(length)))
                place.append(((self.size - scaled) // 2, scaled))
            else:  # cropped: the centre `size` of the scaled axis
                start = round((scaled - self.size) / 2)
                box.append((start * length / scaled, (start + self.size) * length / scaled))
                place.append((0, self.size))
        (x0, out_w), (y0, out_h) = place
        part = crop_resize(image, (box[0][0], box[1][0], box[0][1], box[1][1]), (out_w, out_h), self.mode,
                           self.interpolation)
        out = np.empty((self.size, self.size, part.shape[2]), dtype=np.uint8)
        out[...] = np.resize(np.asarray(self.fill, dtype=np.uint8), part.shape[2])
        out[y0:y0 + out_h, x0:x0 + out_w] = part
        return out
