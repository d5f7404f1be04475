"""Image sets: one split of a dataset as (raw image, label) pairs, and the dataset the loader indexes.

An `ImageSet` knows its images, labels, class names, channels and normalisation statistics; it does no
augmentation. `AugmentedDataset` pairs one with a transform and is what a DataLoader reads: its keys are
(index, epoch) pairs, and each sample's random generator is seeded by (seed, epoch, index).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from senet.data.images import BadImage, Source, open_image
from senet.errors import SenetError
from senet.options import IMAGENET_MEAN, IMAGENET_STD


class ImageSet(Protocol):
    """One split of a dataset (see module docstring)."""

    name: str
    classes: list[str]
    channels: int  # 1 (grayscale) or 3 (RGB)
    mean: tuple[float, ...]  # per-channel normalisation statistics in [0, 1]
    std: tuple[float, ...]
    native_size: int | None  # the side of its (square) images, if they all have one
    pil_mode: str | None  # what Pillow images are converted to ("RGB"), None for decoded arrays

    def __len__(self) -> int: ...

    def load(self, index: int) -> Source: ...

    def label(self, index: int) -> int: ...

    def describe(self, index: int) -> str: ...


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation in [0, 1] of uint8 images (N, H, W, C)."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return tuple(round(float(v), 4) for v in pixels.mean(0)), tuple(round(float(v), 4) for v in pixels.std(0))


@dataclass
class ArraySet:
    """Decoded images held in memory: uint8 (N, H, W, C) plus integer labels (digits, CIFAR)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    pil_mode: str | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"ArraySet wants uint8 (N, H, W, C) images, got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError("ArraySet: images and labels differ in length")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if not self.mean:
            self.mean, self.std = channel_stats(self.images)

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    @property
    def native_size(self) -> int | None:
        height, width = self.images.shape[1:3]
        return int(height) if height == width else None

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> np.ndarray:
        return self.images[index]

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def describe(self, index: int) -> str:
        return f"{self.name} #{index}"


@dataclass
class SyntheticSet:
    """Random uint8 images with random labels, generated on the fly from (seed, index): benchmarks, smoke runs."""

    name: str
    count: int
    size: int
    num_classes: int
    channels: int = 3
    seed: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    pil_mode: str | None = None
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Uniform bytes: mean 127.5 / 255, std 255 / sqrt(12) / 255.
        self.mean = self.mean or (0.5,) * self.channels
        self.std = self.std or (0.2887,) * self.channels
        self.classes = self.classes or [f"class_{i}" for i in range(self.num_classes)]

    @property
    def native_size(self) -> int:
        return self.size

    def __len__(self) -> int:
        return self.count

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, index))

    def load(self, index: int) -> np.ndarray:
        return self._rng(index).integers(0, 256, (self.size, self.size, self.channels), dtype=np.uint8)

    def label(self, index: int) -> int:
        return int(self._rng(index + self.count).integers(self.num_classes))

    def describe(self, index: int) -> str:
        return f"{self.name} #{index}"


@dataclass
class FolderSet:
    """Image files in class folders (the ImageFolder layout), decoded with Pillow when loaded."""

    name: str
    root: Path
    classes: list[str]
    files: list[str]
    labels: np.ndarray
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    native_size: int | None = None
    pil_mode: str | None = "RGB"

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Image.Image:
        return open_image(self.root / self.files[index])

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def describe(self, index: int) -> str:
        return str(self.root / self.files[index])


class ImageTransform(Protocol):
    def __call__(self, image: Source, rng: np.random.Generator) -> np.ndarray: ...


# What a corrupt or unreadable file raises inside Pillow while opening or decoding.
DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)


class AugmentedDataset(torch.utils.data.Dataset):
    """An ImageSet with its transform; key (index, epoch) -> (uint8 (H, W, C) array, label) or BadImage.

    The random generator of each sample is seeded by (seed, epoch, index): augmentation does not depend
    on which worker loads the sample, or on where a resumed run restarted.
    """

    def __init__(self, images: ImageSet, transform: ImageTransform, seed: int = 0) -> None:
        self.images = images
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[np.ndarray, int] | BadImage:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        rng = np.random.default_rng((self.seed, epoch, index))
        image = None
        try:
            image = self.images.load(index)
            array = self.transform(image, rng)
        except SenetError:
            raise
        except DECODE_ERRORS as error:
            reason = (str(error).splitlines() or [type(error).__name__])[0] or type(error).__name__
            return BadImage(self.images.describe(index), reason)
        finally:
            if isinstance(image, Image.Image):
                image.close()
        return array, self.images.label(index)


def scan_folder(split_dir: Path, classes: Sequence[str] | None, extensions: Sequence[str]) -> tuple[list[str], list[str], np.ndarray]:
    """(classes, files relative to split_dir, labels) of split_dir/<class>/*; raises SenetError on bad layouts."""
    found = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))
    if not found:
        raise SenetError(f"{split_dir} has no class folders; expected {split_dir}/<class>/<image files>")
    if classes is not None and found != list(classes):
        only_here = sorted(set(found) - set(classes))
        missing = sorted(set(classes) - set(found))
        detail = "; ".join(
            part
            for part in (
                f"not in train: {', '.join(only_here[:5])}" if only_here else "",
                f"missing here: {', '.join(missing[:5])}" if missing else "",
            )
            if part
        )
        raise SenetError(f"the classes of {split_dir} differ from the training classes ({detail}); both splits need the same class folders")
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(found):
        images = sorted(
            entry.name
            for entry in os.scandir(split_dir / name)
            if entry.is_file() and not entry.name.startswith(".") and entry.name.lower().endswith(tuple(extensions))
        )
        if not images:
            raise SenetError(
                f"class folder {split_dir / name} has no images (looked for {', '.join(extensions)}); "
                "add images or remove the folder"
            )
        files += [f"{name}/{image}" for image in images]
        labels += [label] * len(images)
    return found, files, np.asarray(labels, dtype=np.int64)
