"""Transforms: crop geometry, determinism per (seed, epoch, index), JPEG draft decoding, CIFAR pad-crop."""

import io

import numpy as np
import pytest
from PIL import Image

from senet.data import EvalTransform, TrainTransform, crop_resize
from senet.data.transforms import center_box, pad_crop, random_resized_box
from senet.errors import ConfigError


def test_random_resized_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_box(400, 300, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        w, h = right - left, bottom - top
        assert 0 <= left and right <= 400 and 0 <= top and bottom <= 300
        assert 0.08 * 0.9 <= w * h / (400 * 300) <= 1.0
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_random_resized_box_falls_back_to_centre_crop_for_extreme_images():
    # A 1000x10 strip: no box with aspect <= 4/3 and 8% of the area fits, so the centre crop is used.
    box = random_resized_box(1000, 10, (0.9, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0))
    assert box == (493, 0, 506, 10)


def test_center_box_is_the_256_to_224_crop():
    # Resize the shorter side 300 -> 256, then crop 224: the kept part of the original is 300 * 224/256 wide.
    left, top, right, bottom = center_box(400, 300, 224, 0.875)
    assert right - left == pytest.approx(262.5) and bottom - top == pytest.approx(262.5)
    assert (left + right) / 2 == 200 and (top + bottom) / 2 == 150


def test_pad_crop_shifts_content_and_zero_fills():
    image = np.arange(1, 17, dtype=np.uint8).reshape(4, 4, 1)
    seen = set()
    for seed in range(50):
        out = pad_crop(image, 2, np.random.default_rng(seed))
        assert out.shape == image.shape
        nonzero = out[out > 0]
        # Every kept pixel is an original pixel, in the original order.
        assert np.all(np.diff(nonzero.astype(int)) > 0)
        seen.add(out.tobytes())
    assert len(seen) > 10


def test_train_transform_is_a_function_of_the_generator():
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    transform = TrainTransform(24)
    a = transform(image, np.random.default_rng((0, 1, 5)))
    b = transform(image, np.random.default_rng((0, 1, 5)))
    c = transform(image, np.random.default_rng((0, 2, 5)))
    assert a.shape == (24, 24, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_flip_mirrors_the_image():
    image = np.random.default_rng(1).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    flips = TrainTransform(8, "resize", flip=True)
    outs = {flips(image, np.random.default_rng(seed)).tobytes() for seed in range(20)}
    assert outs == {image.tobytes(), image[:, ::-1].copy().tobytes()}


def test_eval_transform_of_a_square_array_at_its_size_is_the_identity():
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(EvalTransform(32, 1.0)(image), image)
    assert EvalTransform(16, 1.0)(image).shape == (16, 16, 3)
    assert EvalTransform(24, 0.875)(image[:, :20]).shape == (24, 24, 3)


def jpeg(size: tuple[int, int]) -> Image.Image:
    gradient = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, "JPEG", quality=95)
    buffer.seek(0)
    return Image.open(buffer)


def test_jpeg_draft_mode_decodes_at_reduced_scale_and_matches_a_full_decode():
    box = (0, 0, 1600, 1200)
    drafted = jpeg((1600, 1200))
    out = crop_resize(drafted, box, (200, 150), "RGB")
    assert drafted.size == (200, 150)  # decoded at 1/8 scale: the DCT scale that still covers the output
    full = jpeg((1600, 1200)).convert("RGB")
    reference = crop_resize(full, box, (200, 150))
    assert out.shape == reference.shape == (150, 200, 3)
    assert np.abs(out.astype(int) - reference.astype(int)).mean() < 3


def test_bad_transform_settings_are_config_errors():
    with pytest.raises(ConfigError, match="train_transform"):
        TrainTransform(32, "random_crop")
    with pytest.raises(ConfigError, match="scale"):
        TrainTransform(32, scale=(0.5, 0.1))
    with pytest.raises(ConfigError, match="crop fraction"):
        EvalTransform(32, 1.5)
