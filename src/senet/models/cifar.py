"""CIFAR ResNets and Wide ResNets with their SE twins (paper Sec. 6.1, Tables 4-5).

- resnet20 .. resnet110: He et al. 2016 Sec. 4.2: 3x3 stem (16), three stages of 2n basic blocks with
  16, 32, 64 channels, parameter-free "option A" shortcuts (subsample and zero-pad channels).
- resnet164: pre-activation bottleneck ResNet (He et al., Identity Mappings), 18 blocks per stage,
  outputs 64, 128, 256, 1x1 projection shortcuts.
- wrn16_8: Wide ResNet-16-8 (Zagoruyko & Komodakis): pre-activation basic blocks, widths 128, 256, 512;
  `drop_rate` is its dropout between the two 3x3 convs of each block (on the other models: before the
  classifier).

Stages are numbered as the paper numbers ImageNet stages: the 32x32, 16x16 and 8x8 stages are 2, 3, 4.

Narrow stages and SE: at the paper's r = 16 a 16-channel stage would get a 1-unit excitation bottleneck.
On CIFAR models the bottleneck is therefore max(C // r, 4) units wide by default (`se_min_channels=4`):
16 channels -> 4 units, 32 -> 4, 64 -> 4, 128 and up -> C / 16. Pass `se_min_channels=1` for the literal C // r.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from senet.errors import check_choice
from senet.layers import SEConfig, SEResidualUnit
from senet.layers.drop import check_drop_path_rate, drop_path_rates
from senet.models.base import BATCHNORM, CONV, ImageClassifier, Stage, init_weights_he
from senet.models.blocks import build_model
from senet.models.features import FeatureInfo, StageInfo, feature
from senet.models.registry import register_model
from senet.models.resnet import RESIDUAL_PLACEMENT, BasicBlock

STAGES = (2, 3, 4)
SHORTCUTS = ("A", "B")
CIFAR_SE_DEFAULTS = SEConfig(min_channels=4)


class PadShortcut(nn.Module):
    """He et al.'s option A: subsample by `stride` and zero-pad the new channels (no parameters)."""

    def __init__(self, stride: int, extra_channels: int, dims: int = 2) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        # x[:, :, ::stride, ::stride], written so that TorchScript compiles it and torch.fx traces it (the
        # spatial rank is the module's, not read from x)
        for axis in range(2, 2 + self.dims):
            x = x.transpose(0, axis)[:: self.stride].transpose(0, axis)
        return F.pad(x, [0, 0] * self.dims + [0, self.extra_channels])


class PreActBottleneck(SEResidualUnit):
    """BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 (x4) with an identity or 1x1 projection shortcut."""

    expansion = 4
    preact = True

    def __init__(self, in_channels: int, planes: int, *, stride: int = 1, se: SEConfig | None = None,
                 dims: int = 2, drop_path: float = 0.0) -> None:
        super().__init__()
        conv, norm = CONV[dims], BATCHNORM[dims]
        out_channels = planes * self.expansion
        self.bn1 = norm(in_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = conv(in_channels, planes, 1, bias=False)
        self.bn2 = norm(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = conv(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = norm(planes)
        self.act3 = nn.ReLU(inplace=True)
        self.conv3 = conv(planes, out_channels, 1, bias=False)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = conv(in_channels, out_channels, 1, stride, bias=False)
        self.init_se(se, in_channels=in_channels, mid_channels=planes, out_channels=out_channels, dims=dims,
                     drop_path=drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.se_pre(x)
        preact = self.act1(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(preact)
        out = self.conv1(preact)
        out = self.se_mid(self.conv2(self.act2(self.bn2(out))))
        out = self.conv3(self.act3(self.bn3(out)))
        return self.se_merge(out, shortcut)


class WideBasic(SEResidualUnit):
    """Pre-activation BN-ReLU-3x3, BN-ReLU-dropout-3x3 block of Wide ResNets (Zagoruyko & Komodakis 2016,
    Sec. 2.4: dropout between the two convolutions, `drop_rate`, 0.3 in their CIFAR runs)."""

    expansion = 1
    preact = True

    def __init__(self, in_channels: int, planes: int, *, stride: int = 1, se: SEConfig | None = None,
                 drop_rate: float = 0.0, dims: int = 2, drop_path: float = 0.0) -> None:
        super().__init__()
        conv, norm = CONV[dims], BATCHNORM[dims]
        self.bn1 = norm(in_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = conv(in_channels, planes, 3, stride, 1, bias=False)
        self.bn2 = norm(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.conv2 = conv(planes, planes, 3, 1, 1, bias=False)
        self.downsample = None
        if stride != 1 or in_channels != planes:
            self.downsample = conv(in_channels, planes, 1, stride, bias=False)
        self.init_se(se, in_channels=in_channels, mid_channels=planes, out_channels=planes, dims=dims,
                     drop_path=drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.se_pre(x)
        preact = self.act1(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(preact)
        out = self.se_mid(self.conv1(preact))
        out = self.conv2(self.drop(self.act2(self.bn2(out))))
        return self.se_merge(out, shortcut)


class CifarResNet(ImageClassifier):
    """A 3-stage ResNet for 32x32 inputs: 3x3 stem, stages at 32, 16, 8 pixels, global pooling, FC."""

    def __init__(
        self,
        block: type[BasicBlock] | type[PreActBottleneck] | type[WideBasic],
        depth: int,
        widths: tuple[int, int, int],
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        shortcut: str = "A",
        se: SEConfig | None = None,
        zero_init_last: bool = False,
        dims: int = 2,
        name: str = "cifar_resnet",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_choice("shortcut", shortcut, SHORTCUTS)
        if se is not None:
            se.check_stages(STAGES)
        self.in_chans = in_chans
        self.spatial_dims = dims
        self.default_input_size = (in_chans,) + (32,) * dims
        self.se_config = se
        conv, norm = CONV[dims], BATCHNORM[dims]
        preact = getattr(block, "preact", False)

        stem: list[nn.Module] = [conv(in_chans, 16, 3, 1, 1, bias=False)]
        if not preact:
            stem += [norm(16), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        in_channels = 16
        # Stochastic depth: rate * i / (n - 1) over all n residual units (timm's rule).
        rates = iter(drop_path_rates(check_drop_path_rate(drop_path_rate, name), depth * len(STAGES)))
        for index, (stage, planes) in enumerate(zip(STAGES, widths)):
            units: list[nn.Module] = []
            for i in range(depth):
                rate = next(rates)
                stride = 2 if index > 0 and i == 0 else 1
                stage_se = None if se is None else se.for_stage(stage, STAGES)
                out_channels = planes * block.expansion
                if preact:
                    unit = block(in_channels, planes, stride=stride, se=stage_se, dims=dims, drop_path=rate,
                                 **({"drop_rate": drop_rate} if block is WideBasic else {}))
                else:
                    downsample = None
                    if stride != 1 or in_channels != out_channels:
                        if shortcut == "A":
                            downsample = PadShortcut(stride, out_channels - in_channels, dims)
                        else:
                            downsample = nn.Sequential(
                                conv(in_channels, out_channels, 1, stride, bias=False), norm(out_channels)
                            )
                    unit = block(in_channels, planes, stride=stride, downsample=downsample, se=stage_se, dims=dims,
                                 drop_path=rate)
                units.append(unit)
                in_channels = out_channels
            self.add_module(f"layer{index + 1}", Stage(*units))
        # Pre-activation networks end with the BN-ReLU the last unit did not apply.
        self.final = nn.Sequential(norm(in_channels), nn.ReLU(inplace=True)) if preact else nn.Identity()
        # The three stages at 32, 16, 8 pixels (the last one's output after the pre-activation networks' BN-ReLU).
        self.feature_info = FeatureInfo(
            feature(module, width * block.expansion, 2**index)
            for index, (module, width) in enumerate(zip(("layer1", "layer2", "final" if preact else "layer3"), widths))
        )
        self.stage_info = StageInfo({f"layer{i + 1}": stage for i, stage in enumerate(STAGES)}, STAGES, RESIDUAL_PLACEMENT,
                                    CIFAR_SE_DEFAULTS)
        # drop_rate: a Wide ResNet's dropout between the convs of each wide block (its paper has none before
        # the classifier); every other CIFAR network's dropout before the classifier.
        self.init_head(in_channels, num_classes, 0.0 if block is WideBasic else drop_rate)
        self.drop_rate = drop_rate

        init_weights_he(self, zero_init_last)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.check_input(x)
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.final(x)


# Keywords a user may pass to every CIFAR ResNet beyond the common ones (`blocks.USER_KWARGS`).
OPTIONS = ("shortcut", "zero_init_last", "drop_path_rate")


def build_cifar(name: str, se: bool, kwargs: dict[str, Any], **arch: Any) -> CifarResNet:
    """Build the CIFAR network `arch` with the user's `kwargs` (`blocks.build_model`)."""
    return build_model(CifarResNet, name, se, kwargs, extra_kwargs=OPTIONS, se_defaults=CIFAR_SE_DEFAULTS, **arch)


# He et al. 2016 Sec. 4.2: depth 6n + 2, n basic blocks per stage.
# fmt: off
@register_model
def resnet20(**kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR (n = 3)."""
    return build_cifar("resnet20", False, kwargs, block=BasicBlock, depth=3, widths=(16, 32, 64))

@register_model
def se_resnet20(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-20 for CIFAR (n = 3)."""
    return build_cifar("se_resnet20", True, kwargs, block=BasicBlock, depth=3, widths=(16, 32, 64))

@register_model
def resnet32(**kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR (n = 5)."""
    return build_cifar("resnet32", False, kwargs, block=BasicBlock, depth=5, widths=(16, 32, 64))

@register_model
def se_resnet32(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-32 for CIFAR (n = 5)."""
    return build_cifar("se_resnet32", True, kwargs, block=BasicBlock, depth=5, widths=(16, 32, 64))

@register_model
def resnet44(**kwargs: Any) -> CifarResNet:
    """ResNet-44 for CIFAR (n = 7)."""
    return build_cifar("resnet44", False, kwargs, block=BasicBlock, depth=7, widths=(16, 32, 64))

@register_model
def se_resnet44(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-44 for CIFAR (n = 7)."""
    return build_cifar("se_resnet44", True, kwargs, block=BasicBlock, depth=7, widths=(16, 32, 64))

@register_model
def resnet56(**kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR (n = 9)."""
    return build_cifar("resnet56", False, kwargs, block=BasicBlock, depth=9, widths=(16, 32, 64))

@register_model
def se_resnet56(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-56 for CIFAR (n = 9)."""
    return build_cifar("se_resnet56", True, kwargs, block=BasicBlock, depth=9, widths=(16, 32, 64))

@register_model
def resnet110(**kwargs: Any) -> CifarResNet:
    """ResNet-110 for CIFAR (n = 18; Table 4: 6.37% CIFAR-10 error, 5.21% with SE)."""
    return build_cifar("resnet110", False, kwargs, block=BasicBlock, depth=18, widths=(16, 32, 64))

@register_model
def se_resnet110(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-110 for CIFAR (n = 18)."""
    return build_cifar("se_resnet110", True, kwargs, block=BasicBlock, depth=18, widths=(16, 32, 64))
# fmt: on


@register_model
def resnet164(**kwargs: Any) -> CifarResNet:
    """Pre-activation ResNet-164 for CIFAR: 18 bottlenecks per stage (Table 4: 5.46% -> 4.39% with SE)."""
    return build_cifar("resnet164", False, kwargs, block=PreActBottleneck, depth=18, widths=(16, 32, 64))


@register_model
def se_resnet164(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-164 for CIFAR."""
    return build_cifar("se_resnet164", True, kwargs, block=PreActBottleneck, depth=18, widths=(16, 32, 64))


@register_model
def wrn16_8(**kwargs: Any) -> CifarResNet:
    """Wide ResNet-16-8: 2 wide blocks per stage, widths 128, 256, 512 (Table 4: 4.27% -> 3.88% with SE)."""
    return build_cifar("wrn16_8", False, kwargs, block=WideBasic, depth=2, widths=(128, 256, 512))


@register_model
def se_wrn16_8(**kwargs: Any) -> CifarResNet:
    """SE-WRN-16-8 for CIFAR."""
    return build_cifar("se_wrn16_8", True, kwargs, block=WideBasic, depth=2, widths=(128, 256, 512))
