"""The `--data` argument: which dataset, and its training and validation splits.

    digits                         scikit-learn's 8x8 handwritten digits (1797 images, 10 classes)
    synthetic[:k=v,...]            random images: classes=10, train=1024, val=256, size=<input size>, channels=3
    folder:PATH                    PATH/train/<class>/* and PATH/val/<class>/* (JPEG, PNG, ...)
    cifar10:PATH, cifar100:PATH    the standard releases unpacked locally (binary or Python version)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from senet.data.datasets import ArraySet, FolderSet, ImageSet, SyntheticSet, scan_folder
from senet.data.images import IMAGE_EXTENSIONS
from senet.errors import ConfigError, SenetError, did_you_mean, or_list

from senet.options import DATA_KINDS as KINDS
from senet.options import SYNTHETIC_OPTIONS, data_form


@dataclass(frozen=True)
class DataSpec:
    """A parsed `--data` value."""

    kind: str
    path: Path | None = None
    options: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.path is not None:
            return f"{self.kind}:{self.path}"
        if self.options:
            return "synthetic:" + ",".join(f"{k}={v}" for k, v in self.options.items())
        return self.kind


@dataclass
class Splits:
    """The training and validation image sets of one dataset."""

    train: ImageSet
    val: ImageSet
    spec: DataSpec

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def channels(self) -> int:
        return self.train.channels


def parse_data_spec(text: str) -> DataSpec:
    """Parse `digits`, `synthetic[:k=v,...]`, `folder:PATH`, `cifar10:PATH` or `cifar100:PATH`."""
    kind, _, rest = str(text).partition(":")
    if kind not in KINDS:
        raise ConfigError(
            f"unknown data {text!r}{did_you_mean(kind, KINDS)}; use {or_list(map(data_form, KINDS))}"
        )
    if kind == "digits":
        if rest:
            raise ConfigError(f"digits takes no path or options, got {text!r}")
        return DataSpec("digits")
    if kind == "synthetic":
        options: dict[str, int] = {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if key not in SYNTHETIC_OPTIONS or not eq:
                raise ConfigError(
                    f"bad synthetic option {item!r}{did_you_mean(key, SYNTHETIC_OPTIONS)}; "
                    f"use key=value with keys {', '.join(SYNTHETIC_OPTIONS)}"
                )
            try:
                options[key] = int(value)
            except ValueError:
                raise ConfigError(f"synthetic option {key} takes an integer, got {value!r}") from None
            if options[key] < (0 if key == "seed" else 1):
                raise ConfigError(f"synthetic option {key} must be positive, got {value}")
        return DataSpec("synthetic", options=options)
    if not rest:
        raise ConfigError(f"{kind} needs a path: --data {kind}:PATH")
    return DataSpec(kind, Path(rest).expanduser())


def load_digits_splits() -> tuple[ArraySet, ArraySet]:
    """scikit-learn's digits as uint8 (N, 8, 8, 1); every fifth image of each class is validation: 1433 / 364."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SenetError(
            "the digits data needs scikit-learn, an optional extra: pip install 'senet[demo]' "
            "(or run `make demo`), or choose other --data"
        ) from None
    digits = load_digits()
    # Pixel values are 0..16; stretch them to the 0..255 of every other image source.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, :, :, None]
    labels = digits.target.astype(np.int64)
    classes = [str(c) for c in digits.target_names]
    # Stratified: the 1st, 6th, 11th, ... image of each digit goes to validation (35 to 37 per class).
    val = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        val[np.flatnonzero(labels == digit)[::5]] = True
    train_set = ArraySet("digits train", images[~val], labels[~val], classes)  # statistics of the training images
    val_set = ArraySet("digits val", images[val], labels[val], classes, train_set.mean, train_set.std)
    return train_set, val_set


def load_folder_splits(root: Path) -> tuple[FolderSet, FolderSet]:
    """The ImageFolder layout root/train/<class>/* and root/val/<class>/*, same classes in both."""
    if not root.is_dir():
        raise SenetError(f"data folder {root} does not exist")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise SenetError(f"{root} has no {split}/ folder; expected {root}/train/<class>/* and {root}/val/<class>/*")
    classes, train_files, train_labels = scan_folder(root / "train", None, IMAGE_EXTENSIONS)
    _, val_files, val_labels = scan_folder(root / "val", classes, IMAGE_EXTENSIONS)
    return (
        FolderSet(f"{root}/train", root / "train", classes, train_files, train_labels),
        FolderSet(f"{root}/val", root / "val", classes, val_files, val_labels),
    )


def load_folder_eval_split(root: Path) -> FolderSet:
    """The images to evaluate in an image folder: root/val/<class>/* when there is a val/ folder, else
    root/<class>/* (a bare class folder). Evaluation needs no training split."""
    if not root.is_dir():
        raise SenetError(f"data folder {root} does not exist")
    split_dir = root / "val" if (root / "val").is_dir() else root
    if split_dir == root and (root / "train").is_dir():
        raise SenetError(f"{root} has train/ but no val/ folder; evaluate on {root}/val/<class>/* (add it) "
                         f"or name a bare class folder: --data folder:{root / 'train'}")
    classes, files, labels = scan_folder(split_dir, None, IMAGE_EXTENSIONS)
    return FolderSet(str(split_dir), split_dir, classes, files, labels)


def open_eval_data(spec: DataSpec | str, *, default_size: int = 32) -> tuple[ImageSet, DataSpec]:
    """(validation images, parsed spec) of `spec`; an image folder needs only its val/ split or its class folders."""
    spec = parse_data_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "folder":
        assert spec.path is not None
        return load_folder_eval_split(spec.path), spec
    return open_data(spec, default_size=default_size).val, spec


def open_data(spec: DataSpec | str, *, default_size: int = 32) -> Splits:
    """Load (or index) the dataset `spec` names. `default_size` sizes synthetic images given no size=."""
    spec = parse_data_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "digits":
        train, val = load_digits_splits()
    elif spec.kind == "synthetic":
        options = {**SYNTHETIC_OPTIONS, **spec.options}
        size = options["size"] or default_size
        shared = dict(size=size, num_classes=options["classes"], channels=options["channels"])
        train = SyntheticSet("synthetic train", options["train"], seed=options["seed"], **shared)
        val = SyntheticSet("synthetic val", options["val"], seed=options["seed"] + 1, **shared)
    elif spec.kind == "folder":
        assert spec.path is not None
        train, val = load_folder_splits(spec.path)
    else:
        from senet.data.cifar import load_cifar

        assert spec.path is not None
        train, val = load_cifar(spec.path, spec.kind)
    return Splits(train, val, spec)
