"""resolve_data_config / create_transform, named and used as timm's, on senet's own transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import senet
from senet.data import create_transform, resolve_data_config, resolve_model_data_config
from senet.errors import ConfigError


def images() -> list[Image.Image]:
    """Smooth colour images of a few shapes (gradients and blobs: interpolation differences stay small)."""
    rng = np.random.default_rng(0)
    out = []
    for width, height in [(320, 240), (200, 300), (256, 256), (500, 375)]:
        y, x = np.mgrid[0:height, 0:width] / max(width, height)
        channels = [np.sin(6 * x * rng.uniform(0.5, 2) + rng.uniform(0, 3)) * np.cos(5 * y * rng.uniform(0.5, 2)) for _ in range(3)]
        array = (np.stack(channels, -1) * 120 + 128).clip(0, 255).astype(np.uint8)
        out.append(Image.fromarray(array))
    return out


def test_resolve_data_config_from_the_model_and_args() -> None:
    model = senet.create_model("seresnet50")
    config = resolve_data_config(model=model)
    assert config == {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
                      "std": (0.229, 0.224, 0.225), "crop_pct": 0.95, "crop_mode": "center"}
    assert resolve_data_config({"img_size": 160, "crop_pct": 1.0}, model=model)["input_size"] == (3, 160, 160)
    assert resolve_model_data_config(model, use_test_size=True)["input_size"] == (3, 288, 288)
    assert resolve_data_config(model=senet.create_model("se_resnet20"))["input_size"] == (3, 32, 32)
    assert resolve_data_config({}, pretrained_cfg={"crop_pct": 0.9})["crop_pct"] == 0.9


def test_create_transform_is_the_eval_preprocessing() -> None:
    transform = create_transform(**resolve_data_config(model=senet.create_model("se_resnet50")))
    image = images()[0]
    x = transform(image)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    # by hand: the centre square of 0.875 x the shorter side, resized to 224, / 255, normalised
    side = 240 * 0.875
    box = ((320 - side) / 2, (240 - side) / 2, (320 + side) / 2, (240 + side) / 2)
    manual = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR, box=box), dtype=np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    torch.testing.assert_close(x, torch.from_numpy(((manual - mean) / std).transpose(2, 0, 1)).float())
    # squash (timm's): each side resized to floor(64 / 0.875) = 73, the centre 64 kept: 64/73 of each side
    squash = create_transform(64, crop_mode="squash", normalize=False)(image)
    kept = 64 / 73
    box = (320 * (1 - kept) / 2, 240 * (1 - kept) / 2, 320 * (1 + kept) / 2, 240 * (1 + kept) / 2)
    expected = np.asarray(image.resize((64, 64), Image.Resampling.BILINEAR, box=box), dtype=np.float32) / 255
    torch.testing.assert_close(squash, torch.from_numpy(expected.transpose(2, 0, 1)))
    whole = create_transform(64, crop_mode="squash", crop_pct=1.0, normalize=False)(image)
    expected = np.asarray(image.resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    torch.testing.assert_close(whole, torch.from_numpy(expected.transpose(2, 0, 1)))
    # border (timm's): the longer side to 64 (crop_pct 1): the 320 x 240 image becomes 64 x 48, padded with
    # the mean colour above and below
    border = create_transform(64, crop_mode="border", crop_pct=1.0, normalize=False)(image)
    fill = torch.tensor([round(255 * v) for v in (0.485, 0.456, 0.406)]) / 255
    torch.testing.assert_close(border[:, :8], fill.view(3, 1, 1).expand(3, 8, 64))
    torch.testing.assert_close(border[:, 56:], fill.view(3, 1, 1).expand(3, 8, 64))
    expected = np.asarray(image.resize((64, 48), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    torch.testing.assert_close(border[:, 8:56], torch.from_numpy(expected.transpose(2, 0, 1)))
    train = create_transform(32, is_training=True)
    assert train(image).shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="auto_augment"):
        create_transform(224, is_training=True, auto_augment="rand-m9-mstd0.5")


@pytest.mark.peer
@pytest.mark.parametrize("name", ["seresnet50", "legacy_seresnet50", "se_resnet50"])
def test_peer_eval_transform_close_to_timms(name: str) -> None:
    """timm's eval transform (resize shorter side to floor(size / crop_pct), centre crop) and senet's (one-step
    crop-resize) on the same images: the same tensor within interpolation rounding."""
    timm = pytest.importorskip("timm")
    ours = create_transform(**resolve_data_config(model=senet.create_model(name)))
    theirs_model = timm.create_model(name if name != "se_resnet50" else "legacy_seresnet50")
    config = timm.data.resolve_data_config(model=theirs_model)
    if name == "se_resnet50":  # senet's own recipe: bilinear, 0.875 (legacy_seresnet50's too)
        assert (config["interpolation"], config["crop_pct"]) == ("bilinear", 0.875)
    theirs = timm.data.create_transform(**config)
    for image in images():
        a, b = ours(image), theirs(image)
        assert a.shape == b.shape
        # in pixel units (x 255 x std): mean and max |difference| of the uint8 images' values
        diff = ((a - b) * torch.tensor(config["std"]).view(3, 1, 1) * 255).abs()
        # measured: mean 0-1.1, max 0-5 levels of 255 (identical where the crop falls on whole pixels)
        assert diff.mean() < 1.5 and diff.max() <= 6.0, (image.size, float(diff.mean()), float(diff.max()))


@pytest.mark.peer
@pytest.mark.parametrize("crop_mode", ["squash", "border"])
@pytest.mark.parametrize("crop_pct", [0.875, 0.95, 1.0])
def test_peer_crop_modes_close_to_timms(crop_mode: str, crop_pct: float) -> None:
    """timm's squash and border crops (resize, then crop or pad) and senet's (one-step crop-resize, the
    border's fill pasted around): the same tensor within interpolation rounding."""
    timm = pytest.importorskip("timm")
    config = dict(input_size=(3, 224, 224), interpolation="bilinear", mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225), crop_pct=crop_pct, crop_mode=crop_mode)
    ours, theirs = create_transform(**config), timm.data.create_transform(**config)
    for image in images():
        a, b = ours(image), theirs(image)
        assert a.shape == b.shape
        diff = ((a - b) * torch.tensor(config["std"]).view(3, 1, 1) * 255).abs()
        # where the border meets the image a line of pixels may fall on the other side of the rounding
        lines = min(int((diff.amax(dim=(0, 2)) > 6).sum()), int((diff.amax(dim=(0, 1)) > 6).sum()))
        assert diff.mean() < 1.5 and lines <= 2, (image.size, float(diff.mean()), float(diff.max()), lines)
