"""--data parsing, digits and synthetic sets, the resumable sharded sampler, collation and normalisation."""

import builtins

import numpy as np
import pytest
import torch

from senet.data import AugmentedDataset, EvalSampler, Normalize, TrainSampler, TrainTransform, collate, open_data, parse_data_spec
from senet.data.images import BadImage
from senet.errors import ConfigError, SenetError


def test_parse_data_spec():
    assert parse_data_spec("digits").kind == "digits"
    spec = parse_data_spec("synthetic:classes=5,train=10")
    assert spec.options == {"classes": 5, "train": 10} and str(spec) == "synthetic:classes=5,train=10"
    assert str(parse_data_spec("folder:/data/x")) == "folder:/data/x"
    with pytest.raises(ConfigError, match="did you mean 'digits'"):
        parse_data_spec("digit")
    with pytest.raises(ConfigError, match="needs a path"):
        parse_data_spec("cifar10")
    with pytest.raises(ConfigError, match="bad synthetic option 'clases=3' \\(did you mean 'classes'"):
        parse_data_spec("synthetic:clases=3")


def test_digits_split_is_deterministic_disjoint_and_complete():
    a, b = open_data("digits"), open_data("digits")
    assert (len(a.train), len(a.val)) == (1433, 364)
    assert np.array_equal(a.val.images, b.val.images) and np.array_equal(a.train.labels, b.train.labels)
    assert a.train.images.shape[1:] == (8, 8, 1) and a.train.images.max() == 255
    assert a.classes == [str(i) for i in range(10)]
    assert set(np.bincount(a.val.labels)) <= {35, 36, 37}  # stratified: every digit equally represented
    train_rows = {row.tobytes() for row in a.train.images}
    assert sum(row.tobytes() in train_rows for row in a.val.images) < 10  # (a few digits are pixel-identical)


def test_digits_without_scikit_learn_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(SenetError, match=r"needs scikit-learn.*pip install 'senet\[demo\]'"):
        open_data("digits")


def test_synthetic_images_are_reproducible_and_sized():
    splits = open_data("synthetic:classes=3,train=20,val=7,channels=1", default_size=12)
    assert (len(splits.train), len(splits.val), splits.channels) == (20, 7, 1)
    assert splits.train.load(4).shape == (12, 12, 1)
    assert np.array_equal(splits.train.load(4), open_data("synthetic:classes=3,train=20,val=7,channels=1", default_size=12).train.load(4))
    assert not np.array_equal(splits.train.load(4), splits.val.load(4))
    assert {splits.train.label(i) for i in range(20)} == {0, 1, 2}


@pytest.mark.parametrize("world", [1, 2, 3])
def test_train_sampler_shards_cover_every_sample_and_resume_mid_epoch(world):
    size = 10
    samplers = [TrainSampler(size, seed=4, rank=r, world_size=world) for r in range(world)]
    for s in samplers:
        s.set_epoch(1)
    shards = [[i for i, _ in s] for s in samplers]
    assert len({len(shard) for shard in shards}) == 1  # equal shares: every rank takes the same steps
    assert set().union(*shards) == set(range(size))
    # The order depends on the epoch, and a resumed sampler continues where it stopped.
    samplers[0].set_epoch(2)
    assert [i for i, _ in samplers[0]] != shards[0] or world == 3
    samplers[0].set_epoch(1, start=2)
    assert [i for i, _ in samplers[0]] == shards[0][2:]
    assert len(samplers[0]) == len(shards[0]) - 2
    assert all(epoch == 1 for _, epoch in samplers[0])


def test_eval_sampler_shards_without_repeats():
    shards = [list(EvalSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for shard in shards for i, _ in shard) == list(range(7))


def test_collate_drops_bad_images_and_normalize_matches_the_formula():
    image = np.full((4, 4, 3), 255, dtype=np.uint8)
    batch = collate([(image, 1), BadImage("x.jpg", "broken"), (image * 0, 2)])
    assert batch.images.shape == (2, 3, 4, 4) and batch.images.dtype == torch.uint8
    assert batch.labels.tolist() == [1, 2] and batch.bad == [BadImage("x.jpg", "broken")]
    normalize = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 1.0), channels_last=True)
    out = normalize(batch.images)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    expected = (batch.images.float() / 255 - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.25, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_augmentation_depends_on_seed_epoch_and_index_only():
    splits = open_data("synthetic:train=4,val=1,size=16")
    dataset = AugmentedDataset(splits.train, TrainTransform(12), seed=5)
    first, _ = dataset[(2, 0)]
    assert np.array_equal(first, dataset[(2, 0)][0])
    assert not np.array_equal(first, dataset[(2, 1)][0])
    assert not np.array_equal(first, AugmentedDataset(splits.train, TrainTransform(12), seed=6)[(2, 0)][0])
