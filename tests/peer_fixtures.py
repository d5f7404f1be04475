"""Peer models and their fixtures, shared by scripts/make_peer_fixtures.py (run in the peer environment,
with timm and torchvision) and the interop tests (run anywhere).

A fixture holds a peer model's key names and shapes, the seed its weights were drawn from, and the logits
the peer computed on a fixed input with them, in eval mode. `peer_state_dict` draws the same weights again
from the seed (numpy's legacy RandomState, whose streams never change), so a test can load them into senet
and compare its logits with the peer's without timm or torchvision installed.

The weights look trained enough to catch real mistakes: BN running variances spread from 1e-3 to 1 (a wrong
epsilon or a skipped BN shows), running means and biases away from zero, SE gates spread around 0.5, and
scales that keep the logits of a 152-layer network finite and varied (each BN's gamma is proportional to
the square root of its running variance, so a conv-BN pair keeps the variance of its input).
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "peers"
SEED = 2018


@dataclass(frozen=True)
class Peer:
    """One peer model: its source (`senet.interop.sources.SOURCES`), the peer's own name, how it is built,
    and whether its CI check is `slow` (the biggest models; one of each source stays in the fast set)."""

    source: str
    architecture: str
    library: str  # timm, torchvision or senet.pytorch (reproduced below on torchvision modules)
    side: int = 64  # input height and width
    slow: bool = False

    @property
    def fixture(self) -> Path:
        return FIXTURES / f"{self.source}__{self.architecture}.json.gz"


def _peers() -> tuple[Peer, ...]:
    legacy = [("legacy_seresnet18", False), ("legacy_seresnet34", True), ("legacy_seresnet50", False),
              ("legacy_seresnet101", True), ("legacy_seresnet152", True), ("legacy_seresnext26_32x4d", False),
              ("legacy_seresnext50_32x4d", True), ("legacy_seresnext101_32x4d", True), ("legacy_senet154", True)]
    timm = [("seresnet18", False), ("seresnet34", True), ("seresnet50", False), ("seresnet101", True),
            ("seresnet152", True), ("seresnext26d_32x4d", False), ("seresnext26t_32x4d", False),
            ("seresnext50_32x4d", True), ("seresnext101_32x4d", True), ("seresnext101_32x8d", True),
            ("seresnext101_64x4d", True), ("senet154", True), ("resnet18", False), ("resnet34", True),
            ("resnet50", True), ("resnet101", True), ("resnet152", True), ("resnext50_32x4d", True),
            ("resnext101_32x4d", True), ("resnext101_32x8d", True), ("resnext101_64x4d", True),
            ("mobilenetv3_large_100", False), ("mobilenetv3_small_100", False)]
    torchvision = [("resnet18", False), ("resnet34", True), ("resnet50", True), ("resnet101", True),
                   ("resnet152", True), ("resnext50_32x4d", False), ("resnext101_32x8d", True),
                   ("resnext101_64x4d", True), ("mobilenet_v3_large", False), ("mobilenet_v3_small", False)]
    senet_pytorch = [("se_resnet18", True), ("se_resnet34", True), ("se_resnet50", False), ("se_resnet101", True),
                     ("se_resnet152", True)]
    cifar = ["se_resnet20", "se_resnet32", "se_resnet56"]
    return (
        *(Peer("timm-legacy", name, "timm", slow=slow) for name, slow in legacy),
        *(Peer("timm", name, "timm", slow=slow) for name, slow in timm),
        *(Peer("torchvision", name, "torchvision", slow=slow) for name, slow in torchvision),
        *(Peer("senet.pytorch", name, "senet.pytorch", slow=slow) for name, slow in senet_pytorch),
        *(Peer("senet.pytorch", name, "senet.pytorch", side=32) for name in cifar),
    )


PEERS = _peers()


# ---------------------------------------------------------------------------------------------------
# Weights and input from the seed


def _rng(seed: int, key: str) -> np.random.RandomState:
    return np.random.RandomState((seed * 1_000_003 + zlib.crc32(key.encode())) % 2**32)


def _uniform(seed: int, key: str, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    return _rng(seed, key).uniform(low, high, size=shape)


def peer_state_dict(keys: list[tuple[str, tuple[int, ...], str]], seed: int = SEED) -> dict[str, torch.Tensor]:
    """The peer's weights drawn from `seed`: `keys` are (name, shape, dtype) in the peer's state-dict order.

    Each tensor depends only on its name, shape and the seed. BN (a 1-D weight beside a running_var):
    running_var = 10^U(-3, 0), running_mean and bias U(-0.2, 0.2), weight = U(0.4, 1.2) * sqrt(running_var);
    conv and linear weights U(-a, a) with standard deviation 1/sqrt(fan_in); other biases U(-0.1, 0.1).
    """
    names = {name for name, _, _ in keys}
    out: dict[str, torch.Tensor] = {}
    for name, shape, dtype in keys:
        shape = tuple(shape)
        prefix, _, leaf = name.rpartition(".")
        is_bn = f"{prefix}.running_var" in names
        if dtype == "int64":
            value = np.zeros(shape, dtype=np.int64)
        elif leaf == "running_var":
            value = 10.0 ** _uniform(seed, name, shape, -3.0, 0.0)
        elif leaf == "running_mean" or (is_bn and leaf == "bias"):
            value = _uniform(seed, name, shape, -0.2, 0.2)
        elif is_bn and leaf == "weight":
            var = 10.0 ** _uniform(seed, f"{prefix}.running_var", shape, -3.0, 0.0)
            value = _uniform(seed, name, shape, 0.4, 1.2) * np.sqrt(var)
        elif len(shape) >= 2:
            bound = np.sqrt(3.0 / int(np.prod(shape[1:])))
            value = _uniform(seed, name, shape, -bound, bound)
        else:
            value = _uniform(seed, name, shape, -0.1, 0.1)
        out[name] = torch.from_numpy(np.ascontiguousarray(value).reshape(shape)).to(getattr(torch, dtype))
    return out


def peer_input(side: int, seed: int = SEED, batch: int = 2) -> torch.Tensor:
    """The fixed input: (batch, 3, side, side) standard normal values from the seed."""
    return torch.from_numpy(np.random.RandomState(seed).standard_normal((batch, 3, side, side)).astype(np.float32))


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs|: the exactness measure of docs/weights.md."""
    return float((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max())


# ---------------------------------------------------------------------------------------------------
# Fixture files


def write_fixture(peer: Peer, keys: list[tuple[str, tuple[int, ...], str]], logits: torch.Tensor,
                  info: dict[str, Any]) -> None:
    data = {
        "source": peer.source, "architecture": peer.architecture, "library": peer.library, "seed": SEED,
        "input_shape": list(peer_input(peer.side).shape), "keys": [[k, list(s), d] for k, s, d in keys],
        "logits_shape": list(logits.shape),
        "logits_float32": base64.b64encode(logits.float().contiguous().numpy().tobytes()).decode(),
        **info,
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with gzip.open(peer.fixture, "wt", compresslevel=9) as f:
        json.dump(data, f, separators=(",", ":"))


def read_fixture(peer: Peer) -> dict[str, Any]:
    """The fixture as written, with `keys` as (name, shape tuple, dtype) and `logits` as a float32 tensor."""
    with gzip.open(peer.fixture, "rt") as f:
        data = json.load(f)
    data["keys"] = [(k, tuple(s), d) for k, s, d in data["keys"]]
    raw = np.frombuffer(base64.b64decode(data["logits_float32"]), dtype=np.float32)
    data["logits"] = torch.from_numpy(raw.copy()).reshape(data["logits_shape"])
    return data


def state_dict_keys(state_dict: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state_dict.items()]


# ---------------------------------------------------------------------------------------------------
# Live peers (timm / torchvision importable: the peer environment)


def build_peer(peer: Peer) -> torch.nn.Module:
    """The real peer model, untrained (pretrained=False), in eval mode."""
    if peer.library == "timm":
        import timm

        return timm.create_model(peer.architecture, pretrained=False).eval()
    if peer.library == "torchvision":
        import torchvision

        return torchvision.models.get_model(peer.architecture, weights=None).eval()
    return _senet_pytorch(peer.architecture).eval()


def peer_preprocessing(peer: Peer) -> dict[str, Any]:
    """What the peer library says its default checkpoint of this architecture expects (for the fixture)."""
    if peer.library == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(peer.architecture)
        return {"mean": list(cfg.mean), "std": list(cfg.std), "input_size": list(cfg.input_size),
                "crop_pct": cfg.crop_pct, "interpolation": cfg.interpolation}
    if peer.library == "torchvision":
        import torchvision

        transforms = torchvision.models.get_model_weights(peer.architecture).DEFAULT.transforms()
        return {"mean": list(transforms.mean), "std": list(transforms.std),
                "input_size": [3, transforms.crop_size[0], transforms.crop_size[0]],
                "crop_pct": transforms.crop_size[0] / transforms.resize_size[0],
                "interpolation": transforms.interpolation.value}
    return {}


def _senet_pytorch(name: str) -> torch.nn.Module:
    """senet.pytorch's models, which are not pip-installable, rebuilt from its published description on
    torchvision's ResNet: an SE layer of two bias-free Linear layers in a Sequential (`fc.0`, ReLU, `fc.2`,
    sigmoid) applied to the last BN's output before the residual sum; ImageNet SE-ResNets on torchvision's
    ResNet class; CIFAR SE-ResNets with a 3x3 stem (16), three stages of 16/32/64 channels, 1x1-conv-BN
    shortcuts where the width changes, and the literal C // 16 bottleneck (1 unit on 16 channels)."""
    from torch import nn
    from torchvision.models.resnet import ResNet

    class SELayer(nn.Module):
        def __init__(self, channels: int, reduction: int = 16) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                    nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, c = x.shape[:2]
            return x * self.fc(self.pool(x).view(n, c)).view(n, c, 1, 1)

    def conv3x3(i: int, o: int, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(i, o, 3, stride, 1, bias=False)

    class SEBasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                     norm_layer=None):
            super().__init__()
            self.conv1, self.bn1 = conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.se = SELayer(planes)
            self.downsample = downsample

        def forward(self, x):
            shortcut = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.se(self.bn2(self.conv2(out)))
            return self.relu(out + shortcut)

    class SEBottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                     norm_layer=None):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
            self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.se = SELayer(planes * 4)
            self.downsample = downsample

        def forward(self, x):
            shortcut = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.se(self.bn3(self.conv3(out)))
            return self.relu(out + shortcut)

    class CifarSEBasicBlock(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1, self.bn1 = conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.se = SELayer(planes)
            self.downsample = None
            if inplanes != planes:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes))

        def forward(self, x):
            shortcut = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.se(self.bn2(self.conv2(out)))
            return self.relu(out + shortcut)

    class CifarSEResNet(nn.Module):
        def __init__(self, blocks: int, num_classes: int = 10) -> None:
            super().__init__()
            self.conv1, self.bn1 = conv3x3(3, 16), nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
            stages, inplanes = [], 16
            for planes, stride in ((16, 1), (32, 2), (64, 2)):
                units = [CifarSEBasicBlock(inplanes, planes, stride)]
                units += [CifarSEBasicBlock(planes, planes) for _ in range(blocks - 1)]
                stages.append(nn.Sequential(*units))
                inplanes = planes
            self.layer1, self.layer2, self.layer3 = stages
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(self.pool(x).flatten(1))

    imagenet = {"se_resnet18": (SEBasicBlock, [2, 2, 2, 2]), "se_resnet34": (SEBasicBlock, [3, 4, 6, 3]),
                "se_resnet50": (SEBottleneck, [3, 4, 6, 3]), "se_resnet101": (SEBottleneck, [3, 4, 23, 3]),
                "se_resnet152": (SEBottleneck, [3, 8, 36, 3])}
    if name in imagenet:
        model = ResNet(*imagenet[name])
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        return model
    return CifarSEResNet({"se_resnet20": 3, "se_resnet32": 5, "se_resnet56": 9}[name])
