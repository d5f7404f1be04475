"""CIFAR-10 and CIFAR-100 from the standard releases unpacked locally (paper Sec. 6.1), binary or Python.

The Python version is a set of pickles. Unpickling runs whatever a file asks for, so they are read with
a restricted unpickler that admits only what the format holds: dicts, lists, strings, bytes, numbers
and numpy arrays (their reconstruction functions and dtypes). Anything else is refused.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from senet.data.datasets import ArraySet
from senet.errors import SenetError

IMAGE_BYTES = 3 * 32 * 32

# Where each release keeps its files, relative to the unpacked folder.
LAYOUTS = {
    "cifar10": {
        "binary": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], "batches.meta.txt"),
        "python": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    },
    "cifar100": {
        "binary": ("cifar-100-binary", ["train.bin"], ["test.bin"], "fine_label_names.txt"),
        "python": ("cifar-100-python", ["train"], ["test"], "meta"),
    },
}


class CifarFormatError(SenetError):
    """A CIFAR file that is missing, truncated or not in the release's format."""


def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # Python 3 pickles of bytes at protocol <= 2 go through codecs.encode(str, "latin1").
    allowed[("_codecs", "encode")] = __import__("codecs").encode
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy array reconstruction; every other global is refused."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source
        self.allowed = _numpy_reconstructors()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise CifarFormatError(
                f"{self.source} asks to load {module}.{name}, which a CIFAR pickle never holds; refusing to "
                "unpickle it (is it really the CIFAR Python release?)"
            ) from None


def load_pickle(path: Path) -> dict[str, Any]:
    """Read one CIFAR Python-version pickle with the restricted unpickler; keys are returned as str."""
    try:
        with open(path, "rb") as file:
            content = RestrictedUnpickler(file, str(path)).load()
    except CifarFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as error:
        raise CifarFormatError(f"{path} is not a readable CIFAR Python batch ({error}); re-extract the archive") from None
    if not isinstance(content, dict):
        raise CifarFormatError(f"{path} holds a {type(content).__name__}, not the dict of a CIFAR batch")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in content.items()}


def _names(values: Any, path: Path) -> list[str]:
    if not isinstance(values, list):
        raise CifarFormatError(f"{path}: label names are not a list")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _read_python(folder: Path, files: list[str], fine: bool) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    key = "fine_labels" if fine else "labels"
    for name in files:
        path = folder / name
        batch = load_pickle(path)
        data = batch.get("data")
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != IMAGE_BYTES or key not in batch:
            raise CifarFormatError(f"{path} lacks a {IMAGE_BYTES}-byte-per-row 'data' array or '{key}'")
        batch_labels = np.asarray(batch[key], dtype=np.int64)
        if len(batch_labels) != len(data):
            raise CifarFormatError(f"{path} has {len(data)} images but {len(batch_labels)} labels")
        images.append(data.astype(np.uint8, copy=False))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _read_binary(folder: Path, files: list[str], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    record = label_bytes + IMAGE_BYTES
    for name in files:
        path = folder / name
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise CifarFormatError(
                f"{path} is {raw.size} bytes, not a whole number of {record}-byte records; the file is truncated or "
                "not from the binary release"
            )
        raw = raw.reshape(-1, record)
        labels.append(raw[:, label_bytes - 1].astype(np.int64))  # CIFAR-100: (coarse, fine); we use fine
        images.append(raw[:, label_bytes:])
    return np.concatenate(images), np.concatenate(labels)


def find_release(root: Path, kind: str) -> tuple[str, Path]:
    """("binary" | "python", folder) of the CIFAR release under `root` (the unpacked folder or its parent)."""
    if not root.is_dir():
        raise SenetError(f"{kind} data folder {root} does not exist")
    for version, (subdir, train, _, _) in LAYOUTS[kind].items():
        for folder in (root, root / subdir):
            if all((folder / name).is_file() for name in train):
                return version, folder
    expected = " or ".join(f"{subdir}/{train[0]}" for subdir, train, _, _ in LAYOUTS[kind].values())
    raise SenetError(f"no {kind} release found in {root}: expected {expected} (binary or Python version, unpacked)")


def load_cifar(root: str | Path, kind: str) -> tuple[ArraySet, ArraySet]:
    """(train, test) of CIFAR-10 or CIFAR-100 (`kind`), images uint8 (N, 32, 32, 3), fine labels for CIFAR-100."""
    root = Path(root).expanduser()
    version, folder = find_release(root, kind)
    _, train_files, test_files, meta_name = LAYOUTS[kind][version]
    for name in test_files:
        if not (folder / name).is_file():
            raise CifarFormatError(f"{folder / name} is missing; re-extract the {kind} archive")
    num_classes = 10 if kind == "cifar10" else 100
    if version == "binary":
        label_bytes = 1 if kind == "cifar10" else 2
        train = _read_binary(folder, train_files, label_bytes)
        test = _read_binary(folder, test_files, label_bytes)
        meta = folder / meta_name
        classes = [line.strip() for line in meta.read_text().splitlines() if line.strip()] if meta.is_file() else []
    else:
        fine = kind == "cifar100"
        train = _read_python(folder, train_files, fine)
        test = _read_python(folder, test_files, fine)
        meta = folder / meta_name
        classes = []
        if meta.is_file():
            content = load_pickle(meta)
            key = "fine_label_names" if fine else "label_names"
            classes = _names(content.get(key, []), meta)
    if len(classes) != num_classes:
        classes = [str(i) for i in range(num_classes)]
    for split, (_, labels) in (("train", train), ("test", test)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise CifarFormatError(f"{kind} {split} labels fall outside 0..{num_classes - 1}; is this the right release?")

    def to_set(split: tuple[np.ndarray, np.ndarray], name: str, stats: ArraySet | None) -> ArraySet:
        images = split[0].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        images = np.ascontiguousarray(images)
        if stats is None:
            return ArraySet(name, images, split[1], classes)
        return ArraySet(name, images, split[1], classes, stats.mean, stats.std)

    train_set = to_set(train, f"{kind} train", None)
    return train_set, to_set(test, f"{kind} test", train_set)
