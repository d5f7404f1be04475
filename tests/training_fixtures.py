"""Shared by the data and engine tests: image-folder trees in every mode, tiny training runs."""

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from senet.engine.config import RunConfig
from senet.engine.recipes import resolve_config


def picture(mode: str, size=(40, 30), seed=0) -> Image.Image:
    rgb = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode == "PA":  # palette with a transparent index
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = 0
        return image
    if mode == "I;16":
        return Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
    return rgb.convert(mode)


def make_tree(root: Path) -> Path:
    """train/ and val/ with cats (JPEG RGB, grayscale, CMYK JPEG) and dogs (PNG RGBA, palette, 16-bit)."""
    files = {
        "cat": [("a.jpg", "RGB", "JPEG"), ("b.jpeg", "L", "JPEG"), ("c.JPG", "CMYK", "JPEG")],
        "dog": [("a.png", "RGBA", "PNG"), ("b.png", "P", "PNG"), ("c.png", "I;16", "PNG"), ("d.gif", "PA", "GIF")],
    }
    for split in ("train", "val"):
        for label, images in files.items():
            (root / split / label).mkdir(parents=True)
            for i, (name, mode, fmt) in enumerate(images):
                picture(mode, seed=i).save(root / split / label / name, fmt)
            (root / split / label / "notes.txt").write_text("not an image")
    return root


TINY_DATA = "synthetic:train=64,val=16,size=8,classes=4"


def tiny_config(**overrides: Any) -> RunConfig:
    settings = {
        "model.name": "se_resnet20",
        "data.spec": TINY_DATA,
        "data.input_size": 8,
        "data.workers": 0,
        "train.batch_size": 16,
        "schedule.epochs": 1,
        "schedule.warmup_epochs": 0,
        "optim.lr": 0.05,
        "optim.lr_batch": None,
    }
    return resolve_config("paper-cifar", settings | {k.replace("__", "."): v for k, v in overrides.items()})


def subprocess_env() -> dict[str, str]:
    """Environment for `python -m senet` subprocesses: one thread each (2 cores shared by xdist workers)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


SENET = [sys.executable, "-m", "senet"]
