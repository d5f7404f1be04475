"""ImageFolder data: every image mode becomes RGB, bad files stop the run (or are skipped and counted),
broken layouts give one clear error."""

from pathlib import Path

import numpy as np
import pytest
import torch
from training_fixtures import make_tree

from senet.data import (
    AugmentedDataset,
    BadImage,
    EvalSampler,
    EvalTransform,
    Normalize,
    TrainSampler,
    TrainTransform,
    make_loader,
    open_data,
)
from senet.data.images import BadImageError
from senet.engine.evaluate import device_batches
from senet.errors import SenetError


def test_folder_layout_and_every_mode_becomes_rgb(tmp_path):
    splits = open_data(f"folder:{make_tree(tmp_path)}")
    assert splits.classes == ["cat", "dog"]
    assert len(splits.train) == 7 and len(splits.val) == 7  # notes.txt is not an image
    assert splits.channels == 3
    dataset = AugmentedDataset(splits.train, TrainTransform(16, mode="RGB"))
    labels = []
    for index in range(len(dataset)):
        image, label = dataset[(index, 0)]
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
        labels.append(label)
    assert labels == [0, 0, 0, 1, 1, 1, 1]
    # The 16-bit PNG keeps its range (top 8 bits), not clipped to white.
    image16, _ = AugmentedDataset(splits.train, EvalTransform(16, 1.0, mode="RGB"))[(5, 0)]
    assert 20 < image16.mean() < 235


def test_corrupt_image_stops_with_its_name_or_is_skipped_and_counted(tmp_path):
    root = make_tree(tmp_path)
    (root / "val" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    truncated = (root / "val" / "dog" / "a.png").read_bytes()
    (root / "val" / "dog" / "short.png").write_bytes(truncated[: len(truncated) // 2])
    splits = open_data(f"folder:{root}")
    dataset = AugmentedDataset(splits.val, EvalTransform(16, 0.875, mode="RGB"))
    bad = [dataset[(i, 0)] for i in range(len(dataset)) if isinstance(dataset[(i, 0)], BadImage)]
    assert sorted(Path(b.name).name for b in bad) == ["broken.jpg", "short.png"]

    normalize = Normalize((0.5,) * 3, (0.25,) * 3)
    loader = make_loader(dataset, EvalSampler(len(dataset)), batch_size=4)
    with pytest.raises(BadImageError, match=r"broken\.jpg.*--skip-bad-images") as error:
        list(device_batches(loader, normalize))
    assert "\n" not in str(error.value)
    count = [0]
    images = sum(len(labels) for _, labels in device_batches(loader, normalize, skip_bad_images=True, bad=count))
    assert count == [2] and images == 7


def test_loader_workers_give_the_same_batches_as_the_main_process(tmp_path):
    splits = open_data(f"folder:{make_tree(tmp_path)}")
    dataset = AugmentedDataset(splits.train, TrainTransform(12, mode="RGB"), seed=3)
    def batches(workers):
        sampler = TrainSampler(len(dataset), seed=1)
        sampler.set_epoch(2)
        return [b.images for b in make_loader(dataset, sampler, batch_size=3, workers=workers)]

    for a, b in zip(batches(0), batches(2)):
        assert torch.equal(a, b)


def test_empty_class_folder_is_an_error(tmp_path):
    root = make_tree(tmp_path)
    (root / "train" / "bird").mkdir()
    (root / "val" / "bird").mkdir()
    with pytest.raises(SenetError, match=r"train/bird has no images"):
        open_data(f"folder:{root}")


def test_classes_differing_between_train_and_val_is_an_error(tmp_path):
    root = make_tree(tmp_path)
    (root / "val" / "dog").rename(root / "val" / "wolf")
    with pytest.raises(SenetError, match=r"differ from the training classes \(not in train: wolf; missing here: dog\)"):
        open_data(f"folder:{root}")


def test_missing_folders_are_errors(tmp_path):
    with pytest.raises(SenetError, match="does not exist"):
        open_data(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(SenetError, match="has no val/ folder"):
        open_data(f"folder:{tmp_path}")
