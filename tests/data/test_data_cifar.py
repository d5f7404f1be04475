"""CIFAR releases, binary and Python versions, from tiny fakes; the restricted unpickler refuses code."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from senet.data import open_data
from senet.data.cifar import CifarFormatError, load_pickle
from senet.errors import SenetError

N_TRAIN, N_TEST = 6, 4


def fake_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, 3072) rows in the release's channel-major order, and the same images as (count, 32, 32, 3)."""
    images = np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return images.transpose(0, 3, 1, 2).reshape(count, -1), images


def write_binary(root: Path, kind: str) -> dict:
    classes = 10 if kind == "cifar10" else 100
    folder = root / ("cifar-10-batches-bin" if kind == "cifar10" else "cifar-100-binary")
    folder.mkdir(parents=True)
    names = ([f"data_batch_{i}.bin" for i in range(1, 6)] if kind == "cifar10" else ["train.bin"]) + (
        ["test_batch.bin"] if kind == "cifar10" else ["test.bin"]
    )
    expected = {"train": [], "test": []}
    for i, name in enumerate(names):
        rows, images = fake_images(N_TRAIN if "test" not in name else N_TEST, i)
        labels = (np.arange(len(rows)) * 7 + i) % classes
        label_bytes = [labels[:, None]] if kind == "cifar10" else [(labels // 5)[:, None], labels[:, None]]
        np.concatenate(label_bytes + [rows], axis=1).astype(np.uint8).tofile(folder / name)
        expected["test" if "test" in name else "train"].append((images, labels))
    meta = "batches.meta.txt" if kind == "cifar10" else "fine_label_names.txt"
    (folder / meta).write_text("\n".join(f"name{i}" for i in range(classes)) + "\n")
    return expected


def write_python(root: Path, kind: str, protocol: int = 2) -> dict:
    classes = 10 if kind == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    names = ([f"data_batch_{i}" for i in range(1, 6)] if kind == "cifar10" else ["train"]) + (
        ["test_batch"] if kind == "cifar10" else ["test"]
    )
    key = b"labels" if kind == "cifar10" else b"fine_labels"
    expected = {"train": [], "test": []}
    for i, name in enumerate(names):
        rows, images = fake_images(N_TRAIN if "test" not in name else N_TEST, 10 + i)
        labels = [int(v) for v in (np.arange(len(rows)) * 3 + i) % classes]
        batch = {b"batch_label": b"fake", key: labels, b"data": rows, b"filenames": [b"x.png"] * len(rows)}
        if kind == "cifar100":
            batch[b"coarse_labels"] = [v // 5 for v in labels]
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        expected["test" if "test" in name else "train"].append((images, np.array(labels)))
    meta_key = b"label_names" if kind == "cifar10" else b"fine_label_names"
    meta = "batches.meta" if kind == "cifar10" else "meta"
    (folder / meta).write_bytes(pickle.dumps({meta_key: [f"name{i}".encode() for i in range(classes)]}, protocol=protocol))
    return expected


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
@pytest.mark.parametrize("version", ["binary", "python2", "python5"])
def test_cifar_releases_load_exactly(tmp_path, kind, version):
    if version == "binary":
        expected = write_binary(tmp_path, kind)
    else:
        expected = write_python(tmp_path, kind, protocol=int(version[-1]))
    splits = open_data(f"{kind}:{tmp_path}")
    for split, images_set in (("train", splits.train), ("test", splits.val)):
        images = np.concatenate([images for images, _ in expected[split]])
        labels = np.concatenate([labels for _, labels in expected[split]])
        assert np.array_equal(images_set.images, images)  # (N, 32, 32, 3), channels last
        assert np.array_equal(images_set.labels, labels)  # CIFAR-100: the fine labels
    assert splits.classes[:2] == ["name0", "name1"] and len(splits.classes) == (10 if kind == "cifar10" else 100)
    assert splits.train.native_size == 32 and splits.channels == 3
    assert splits.val.mean == splits.train.mean  # normalised with the training statistics


def test_the_unpacked_folder_itself_can_be_given(tmp_path):
    write_binary(tmp_path, "cifar10")
    splits = open_data(f"cifar10:{tmp_path / 'cifar-10-batches-bin'}")
    assert len(splits.train) == 5 * N_TRAIN


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_anything_but_the_format(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(CifarFormatError, match=r"asks to load (posix|os)\.system.*refusing"):
        load_pickle(path)
    path.write_bytes(pickle.dumps({b"data": __import__("collections").OrderedDict()}, protocol=2))
    with pytest.raises(CifarFormatError, match="collections.OrderedDict"):
        load_pickle(path)


def test_truncated_and_missing_files_are_clear_errors(tmp_path):
    write_binary(tmp_path, "cifar10")
    folder = tmp_path / "cifar-10-batches-bin"
    data = (folder / "data_batch_3.bin").read_bytes()
    (folder / "data_batch_3.bin").write_bytes(data[:-100])
    with pytest.raises(CifarFormatError, match=r"data_batch_3\.bin is .* truncated"):
        open_data(f"cifar10:{tmp_path}")
    with pytest.raises(SenetError, match="no cifar100 release found"):
        open_data(f"cifar100:{tmp_path}")

    write_python(tmp_path / "py", "cifar10")
    batch = tmp_path / "py" / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:50])
    with pytest.raises(CifarFormatError, match=r"data_batch_2 is not a readable CIFAR Python batch"):
        open_data(f"cifar10:{tmp_path / 'py'}")
