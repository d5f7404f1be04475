"""Shared by the interop tests: a small trained-looking network and the files other tools would write of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from senet.models import create_model

CLASSES = ["ant", "bee", "cat", "dog"]
META = {
    "format": 1,
    "model": "se_resnet20",
    "kwargs": {"num_classes": 4, "in_chans": 3},
    "classes": CLASSES,
    "channels": 3,
    "mean": [0.5, 0.4, 0.3],
    "std": [0.2, 0.25, 0.3],
    "input_size": 32,
    "eval_crop_fraction": 1.0,
}


def network(name: str = "se_resnet20", seed: int = 0, **kwargs) -> torch.nn.Module:
    """A model in eval mode whose BN statistics are not the identity (as in a trained network)."""
    torch.manual_seed(seed)
    model = create_model(name, **({"num_classes": 4} | kwargs))
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(torch.empty(module.running_var.shape).uniform_(0.5, 2.0, generator=generator))
    return model.eval()


def batch(channels: int = 3, side: int = 32, n: int = 2) -> torch.Tensor:
    return torch.randn((n, channels, side, side), generator=torch.Generator().manual_seed(1))


def senet_file(path: Path, model: torch.nn.Module, meta: dict | None = None) -> Path:
    """A .safetensors file as `senet train` writes it: the checkpoint record's JSON (format 1) in the header
    under "senet", written here as the plain dict earlier versions of senet wrote."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"senet": json.dumps(META if meta is None else meta)})
    return path


def timm_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A senet torchvision-layout ResNet's state dict in timm resnet.py's names (`conv1`, `bn1` for the stem)."""
    return {k.replace("stem.conv1.", "conv1.").replace("stem.bn1.", "bn1."): v for k, v in state.items()}


def hub_folder(root: Path, model: torch.nn.Module, weights: str = "model.safetensors") -> Path:
    """A hub folder of timm's seresnet18 (senet's se_resnet18, torchvision layout): config.json + weights."""
    root.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in timm_keys(model.state_dict()).items()}
    if weights.endswith(".safetensors"):
        save_file(state, str(root / weights))
    else:
        torch.save(state, root / weights)
    config = {
        "architecture": "seresnet18",
        "num_classes": 4,
        "label_names": CLASSES,
        "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_size": [3, 32, 32],
                           "crop_pct": 0.9, "interpolation": "bicubic"},
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


def png_folder(root: Path, classes=("a", "b", "c"), per_class: int = 4, size=(40, 36)) -> Path:
    """root/train/<class>/*.png and root/val/<class>/*.png of random pixels."""
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.random.default_rng((c, i, split == "val")).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root
