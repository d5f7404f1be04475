"""`senet predict`: the top-k classes of image files, with the checkpoint's own preprocessing and class names.

Each image is decoded and preprocessed as in evaluation (paper Sec. 5.1: the shorter side resized to
input / crop_pct, the centre input x input crop, normalised by the checkpoint's mean and std), through the
same loader as `senet eval`. An unreadable image is reported and skipped; the others are still classified.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from senet.data import AugmentedDataset, BadImage, EvalSampler, FolderSet, Normalize, make_loader
from senet.data.config import create_transform, resolve_data_config
from senet.data.images import IMAGE_EXTENSIONS
from senet.errors import ConfigError


@dataclass
class Prediction:
    """The top classes of one image: (class name, index, probability), most probable first."""

    path: str
    top: list[tuple[str, int, float]]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "top": [{"class": c, "index": i, "prob": round(p, 6)} for c, i, p in self.top]}


def image_files(inputs: Iterable[str | Path]) -> tuple[list[str], list[BadImage]]:
    """(image files, inputs that are not images): files as given, folders searched recursively (sorted)."""
    files: list[str] = []
    missing: list[BadImage] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                str(Path(root) / name)
                for root, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
            )
            if not found:
                missing.append(BadImage(str(path), f"the folder has no images ({', '.join(IMAGE_EXTENSIONS)})"))
            files += found
        elif path.is_file():
            files.append(str(path))
        else:
            missing.append(BadImage(str(path), "no such file or folder"))
    return files, missing


@torch.no_grad()
def predict(
    model: nn.Module,
    files: Sequence[str],
    *,
    top: int = 5,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    workers: int = 0,
) -> tuple[list[Prediction], list[BadImage]]:
    """(predictions in the order of `files`, unreadable images) of a model that has `pretrained_cfg`
    (`senet.load_model`'s models do)."""
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    cfg = model.pretrained_cfg
    channels, size = cfg["input_size"][0], cfg["input_size"][-1]
    if len(cfg["input_size"]) != 3 or channels not in (1, 3):
        raise ConfigError(f"{cfg['model']} does not take images (input {cfg['input_size']}); predict needs an image model")
    mode = "RGB" if channels == 3 else "L"
    images = FolderSet("images", Path(""), [], list(files), np.arange(len(files)), channels=channels, pil_mode=mode)
    transform = create_transform(**resolve_data_config(model=model))  # (the geometry runs in the loader's workers)
    loader = make_loader(AugmentedDataset(images, transform.geometry), EvalSampler(len(files)), batch_size=batch_size,
                         workers=workers)
    device = torch.device(device)
    normalize = Normalize(transform.mean, transform.std, device)
    model.to(device).eval()
    names = cfg.get("label_names")
    outputs = getattr(model, "num_classes", None)
    if names and outputs is not None and len(names) != outputs:  # each name would label another class's score
        raise ConfigError(f"{cfg['model']} has {outputs} class outputs but its checkpoint names {len(names)} classes; "
                          "the names cannot be matched to the outputs: fix the checkpoint's class list (or its --num-classes)")
    predictions, bad = [], []
    for batch in loader:
        bad += batch.bad
        if len(batch.labels) == 0:
            continue
        probs = model(normalize(batch.images)).float().softmax(dim=1)
        values, indices = probs.topk(min(top, probs.shape[1]), dim=1)
        for position, row_values, row_indices in zip(batch.labels.tolist(), values.tolist(), indices.tolist()):
            entries = [(names[i] if names else str(i), i, p) for i, p in zip(row_indices, row_values)]
            predictions.append(Prediction(files[position], entries))
    return predictions, bad


def format_prediction(prediction: Prediction) -> str:
    """`path  class 87.3%  class 5.1%  ...`: one line per image."""
    return prediction.path + "  " + "  ".join(f"{name} {100 * prob:.1f}%" for name, _, prob in prediction.top)
