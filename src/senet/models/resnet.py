"""ResNet, ResNeXt, their SE twins and SENet-154 (paper Sec. 4, Table 1; Sec. 5.1 and the Appendix).

`layout="paper"` (default) is the paper's and the official release's network: the stride of a
downsampling ResNet bottleneck sits on its first 1x1 convolution and the stem max-pool is 3x3/2 with ceil
rounding and no padding; ResNeXt and SENet-154 put the stride on the grouped 3x3. `layout="torchvision"`
is the torchvision/timm `resnet.py` network: stride always on the 3x3, max-pool padded by 1.

Stages are named as the paper names them: conv2_x .. conv5_x are `layer1` .. `layer4`, and `se_stages`
counts them 2 .. 5 (Table 13).

Options other ports' checkpoints need (`senet.interop.sources` maps each port onto them): a deep stem of
three 3x3 convs (`stem_type="deep"`, timm's "d" models and SENet-154; `"deep_tiered"`, timm's "t" models),
ResNet-D shortcuts that average-pool before a stride-1 projection (`avg_pool_shortcut`, He et al. 2019,
"Bag of Tricks", Sec. 4.1), and the ReLU between the last BN and SE that timm's legacy SE-ResNet-18/34 apply
(`relu_before_se`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from senet.errors import ConfigError, check_choice
from senet.layers import SEConfig, SEResidualUnit
from senet.layers.drop import check_drop_path_rate, drop_path_rates
from senet.models.base import AVGPOOL, BATCHNORM, CONV, MAXPOOL, ImageClassifier, Stage, init_weights_he
from senet.models.blocks import build_model
from senet.models.features import FeatureInfo, StageInfo, feature
from senet.models.registry import register_model

from senet.options import LAYOUTS
STAGES = (2, 3, 4, 5)
# Where SE sits in every residual network of senet (ResNet, ResNeXt, SENet-154, the CIFAR ResNets).
RESIDUAL_PLACEMENT = "on each residual unit's branch before the addition, or as se_position says (Fig. 5)"
STEM_TYPES = ("7x7", "deep", "deep_tiered")


class BasicBlock(SEResidualUnit):
    """Two 3x3 convolutions (ResNet-18/34, CIFAR ResNets). SE-3x3 sits after the first one.

    `relu_before_se`: a ReLU between bn2 and the SE block, relu(SE(relu(bn2(.))) + shortcut), as timm's
    legacy SE-ResNet-18/34 compute it (their weights were trained so); off by default (the paper's unit).
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        reduce_first: int = 1,
        stride_on_3x3: bool = True,
        se: SEConfig | None = None,
        dims: int = 2,
        relu_before_se: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64 or reduce_first != 1:
            raise ConfigError("BasicBlock supports only groups=1, base_width=64, reduce_first=1")
        if relu_before_se and (se is None or se.position != "standard"):
            raise ConfigError("relu_before_se needs an SE block at se_position='standard'")
        self.relu_before_se = relu_before_se
        conv, norm = CONV[dims], BATCHNORM[dims]
        self.conv1 = conv(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = norm(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = conv(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.init_se(se, in_channels=in_channels, mid_channels=planes, out_channels=planes, dims=dims,
                     drop_path=drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.se_pre(x)
        out = self.se_mid(self.act1(self.bn1(self.conv1(out))))
        if self.relu_before_se:  # act2(SE(act2(bn2(.))) + shortcut)
            return self.se_merge(self.act2(self.bn2(self.conv2(out))), shortcut, self.act2)
        return self.se_merge(self.conv2(out), shortcut, self.act2, norm=self.bn2)  # act2(SE(bn2(.)) + shortcut)


class Bottleneck(SEResidualUnit):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4 (Table 1). SE-3x3 sits after the 3x3."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        reduce_first: int = 1,
        stride_on_3x3: bool = False,
        se: SEConfig | None = None,
        dims: int = 2,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        conv, norm = CONV[dims], BATCHNORM[dims]
        width = int(planes * base_width / 64) * groups  # ResNeXt: cardinality x bottleneck width
        first_width = width // reduce_first  # SENet-154 halves the first 1x1 (Appendix)
        out_channels = planes * self.expansion
        # Where the stride goes matters for cost: on the 1x1 (paper) the 3x3 runs at the lower resolution.
        stride_1x1, stride_3x3 = (1, stride) if stride_on_3x3 else (stride, 1)
        self.conv1 = conv(in_channels, first_width, 1, stride_1x1, bias=False)
        self.bn1 = norm(first_width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = conv(first_width, width, 3, stride_3x3, 1, groups=groups, bias=False)
        self.bn2 = norm(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = conv(width, out_channels, 1, bias=False)
        self.bn3 = norm(out_channels)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.init_se(se, in_channels=in_channels, mid_channels=width, out_channels=out_channels, dims=dims,
                     drop_path=drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.se_pre(x)
        out = self.act1(self.bn1(self.conv1(out)))
        out = self.se_mid(self.act2(self.bn2(self.conv2(out))))
        return self.se_merge(self.conv3(out), shortcut, self.act3, norm=self.bn3)  # act3(SE(bn3(.)) + shortcut)


def make_stem(
    in_chans: int, width: int, *, stem_type: str, layout: str, dims: int = 2
) -> nn.Sequential:
    """conv1: 7x7/2 conv to `width`, BN, ReLU, then the 3x3/2 max-pool.

    `stem_type="deep"`: three 3x3 convs (the first with stride 2) of widths width/2, width/2, width, each
    with BN and ReLU (SENet-154: 64, 64, 128; timm's "d" ResNets); `"deep_tiered"`: widths 3/8 width,
    width/2, width (timm's "t" ResNets). Names follow the official release's `layer0` (conv1, bn1, relu1,
    ..., pool).
    """
    check_choice("stem_type", stem_type, STEM_TYPES)
    conv, norm = CONV[dims], BATCHNORM[dims]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if stem_type != "7x7":
        first = 3 * (width // 8) if stem_type == "deep_tiered" else width // 2
        channels = [in_chans, first, width // 2, width]
        for i in range(3):
            layers[f"conv{i + 1}"] = conv(channels[i], channels[i + 1], 3, 2 if i == 0 else 1, 1, bias=False)
            layers[f"bn{i + 1}"] = norm(channels[i + 1])
            layers[f"relu{i + 1}"] = nn.ReLU(inplace=True)
    else:
        layers["conv1"] = conv(in_chans, width, 7, 2, 3, bias=False)
        layers["bn1"] = norm(width)
        layers["relu1"] = nn.ReLU(inplace=True)
    if layout == "paper":  # the release's Caffe pooling: no padding, ceil rounding (112 -> 56 either way)
        layers["pool"] = MAXPOOL[dims](3, 2, ceil_mode=True)
    else:
        layers["pool"] = MAXPOOL[dims](3, 2, padding=1)
    return nn.Sequential(layers)


class ResNet(ImageClassifier):
    """ResNet / ResNeXt / SE-ResNet / SE-ResNeXt / SENet-154 for ImageNet-sized inputs (Table 1).

    `se=None` gives the plain network; otherwise an SE block per residual unit of every stage in
    `se.stages`, at `se.position`. `stem_width` is the stem's output width (`make_stem`);
    `avg_pool_shortcut`: ResNet-D projection shortcuts, a 2x2 average pool with the stride, then a
    stride-1 1x1 conv and BN (`downsample.0/1/2`); `relu_before_se`: see `BasicBlock`.
    Input (N, in_chans, *spatial) of any size from 32 up.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        layout: str = "paper",
        groups: int = 1,
        base_width: int = 64,
        stem_width: int = 64,
        stem_type: str = "7x7",
        reduce_first: int = 1,
        downsample_kernel: int = 1,
        avg_pool_shortcut: bool = False,
        relu_before_se: bool = False,
        se: SEConfig | None = None,
        zero_init_last: bool = False,
        dims: int = 2,
        name: str = "resnet",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_choice("layout", layout, LAYOUTS)
        if se is not None:
            se.check_stages(STAGES)
        self.in_chans = in_chans
        self.layout = layout
        self.spatial_dims = dims
        self.default_input_size = (in_chans,) + (224,) * dims
        self.se_config = se
        # Paper layout: ResNet downsamples on the 1x1, ResNeXt / SENet-154 on the grouped 3x3.
        stride_on_3x3 = layout == "torchvision" or groups > 1 or block is BasicBlock
        conv, norm = CONV[dims], BATCHNORM[dims]

        if relu_before_se and (block is not BasicBlock or se is None or se.position != "standard"):
            raise ConfigError(
                "relu_before_se applies to SE basic blocks at se_position='standard' (SE-ResNet-18/34, as "
                "timm's legacy ones), not to bottlenecks or plain networks"
            )
        self.stem = make_stem(in_chans, stem_width, stem_type=stem_type, layout=layout, dims=dims)
        in_channels = stem_width
        # As timm's ResNets: the stem's activation (before the max-pool), then conv2_x .. conv5_x.
        stem_act = "stem.relu1" if stem_type == "7x7" else "stem.relu3"
        stages = [feature(stem_act, stem_width, 2)]
        # Stochastic depth: rate * i / (n - 1) over all n residual units (timm's rule).
        rates = iter(drop_path_rates(check_drop_path_rate(drop_path_rate, name), sum(layers)))
        for index, (stage, depth) in enumerate(zip(STAGES, layers)):
            planes = 64 * 2**index
            stride = 1 if index == 0 else 2
            out_channels = planes * block.expansion
            downsample = None
            if stride != 1 or in_channels != out_channels:
                # SENet-154 uses 3x3 projections from conv3_x on (Appendix); conv2_x keeps a 1x1.
                kernel = downsample_kernel if index > 0 else 1
                if avg_pool_shortcut:  # ResNet-D: pool first so that the 1x1 sees every pixel
                    pool = AVGPOOL[dims](2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
                    downsample = nn.Sequential(pool, conv(in_channels, out_channels, 1, bias=False), norm(out_channels))
                else:
                    downsample = nn.Sequential(
                        conv(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
                        norm(out_channels),
                    )
            units = []
            stage_se = None if se is None else se.for_stage(stage, STAGES)
            for i in range(depth):
                units.append(
                    block(
                        in_channels,
                        planes,
                        stride=stride if i == 0 else 1,
                        downsample=downsample if i == 0 else None,
                        groups=groups,
                        base_width=base_width,
                        reduce_first=reduce_first,
                        stride_on_3x3=stride_on_3x3,
                        se=stage_se,
                        dims=dims,
                        drop_path=next(rates),
                        **({"relu_before_se": True} if relu_before_se and stage_se is not None else {}),
                    )
                )
                in_channels = out_channels
            self.add_module(f"layer{index + 1}", Stage(*units))
            stages.append(feature(f"layer{index + 1}", out_channels, 4 * 2**index))
        self.feature_info = FeatureInfo(stages)
        self.stage_info = StageInfo({f"layer{i + 1}": stage for i, stage in enumerate(STAGES)}, STAGES, RESIDUAL_PLACEMENT)
        self.init_head(in_channels, num_classes, drop_rate)

        init_weights_he(self, zero_init_last)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.check_input(x)
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


# Keywords a user may pass to every ResNet beyond the common ones (`blocks.USER_KWARGS`).
OPTIONS = ("layout", "zero_init_last", "relu_before_se", "drop_path_rate")


def build_resnet(name: str, se: bool, kwargs: dict[str, Any], **arch: Any) -> ResNet:
    """Build the ResNet `arch` (fixed by the model's name) with the user's `kwargs` (`blocks.build_model`)."""
    return build_model(ResNet, name, se, kwargs, extra_kwargs=OPTIONS, **arch)


# Table 1 and Sec. 5.1. Each plain network and its SE twin differ only in `se`.
# fmt: off
@register_model
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (He et al. 2016)."""
    return build_resnet("resnet18", False, kwargs, block=BasicBlock, layers=(2, 2, 2, 2))

@register_model
def se_resnet18(**kwargs: Any) -> ResNet:
    """SE-ResNet-18."""
    return build_resnet("se_resnet18", True, kwargs, block=BasicBlock, layers=(2, 2, 2, 2))

@register_model
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34."""
    return build_resnet("resnet34", False, kwargs, block=BasicBlock, layers=(3, 4, 6, 3))

@register_model
def se_resnet34(**kwargs: Any) -> ResNet:
    """SE-ResNet-34."""
    return build_resnet("se_resnet34", True, kwargs, block=BasicBlock, layers=(3, 4, 6, 3))

@register_model
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (Table 1 left): 25.6M params, 3.86 GMACs (Table 2)."""
    return build_resnet("resnet50", False, kwargs, block=Bottleneck, layers=(3, 4, 6, 3))

@register_model
def se_resnet50(**kwargs: Any) -> ResNet:
    """SE-ResNet-50 (Table 1 middle): 28.1M params, 3.87 GMACs (Table 2)."""
    return build_resnet("se_resnet50", True, kwargs, block=Bottleneck, layers=(3, 4, 6, 3))

@register_model
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101: 7.58 GMACs (Table 2)."""
    return build_resnet("resnet101", False, kwargs, block=Bottleneck, layers=(3, 4, 23, 3))

@register_model
def se_resnet101(**kwargs: Any) -> ResNet:
    """SE-ResNet-101: 7.60 GMACs (Table 2)."""
    return build_resnet("se_resnet101", True, kwargs, block=Bottleneck, layers=(3, 4, 23, 3))

@register_model
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152: 11.30 GMACs (Table 2)."""
    return build_resnet("resnet152", False, kwargs, block=Bottleneck, layers=(3, 8, 36, 3))

@register_model
def se_resnet152(**kwargs: Any) -> ResNet:
    """SE-ResNet-152: 11.32 GMACs (Table 2)."""
    return build_resnet("se_resnet152", True, kwargs, block=Bottleneck, layers=(3, 8, 36, 3))

@register_model
def resnext50_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-50 (32x4d) (Table 1 right): 4.24 GMACs (Table 2)."""
    return build_resnet("resnext50_32x4d", False, kwargs, block=Bottleneck, layers=(3, 4, 6, 3), groups=32, base_width=4)

@register_model
def se_resnext50_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-50 (32x4d) (Table 1 right): 4.25 GMACs (Table 2)."""
    return build_resnet("se_resnext50_32x4d", True, kwargs, block=Bottleneck, layers=(3, 4, 6, 3), groups=32, base_width=4)

@register_model
def resnext101_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-101 (32x4d): 7.99 GMACs (Table 2)."""
    return build_resnet("resnext101_32x4d", False, kwargs, block=Bottleneck, layers=(3, 4, 23, 3), groups=32, base_width=4)

@register_model
def se_resnext101_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-101 (32x4d): 8.00 GMACs (Table 2)."""
    return build_resnet("se_resnext101_32x4d", True, kwargs, block=Bottleneck, layers=(3, 4, 23, 3), groups=32, base_width=4)

@register_model
def resnext101_32x8d(**kwargs: Any) -> ResNet:
    """ResNeXt-101 (32x8d) (Xie et al. 2017; torchvision's resnext101_32x8d)."""
    return build_resnet("resnext101_32x8d", False, kwargs, block=Bottleneck, layers=(3, 4, 23, 3), groups=32, base_width=8)

@register_model
def se_resnext101_32x8d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-101 (32x8d) (timm's seresnext101_32x8d)."""
    return build_resnet("se_resnext101_32x8d", True, kwargs, block=Bottleneck, layers=(3, 4, 23, 3), groups=32, base_width=8)

@register_model
def resnext101_64x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-101 (64x4d), the backbone SENet-154 modifies."""
    return build_resnet("resnext101_64x4d", False, kwargs, block=Bottleneck, layers=(3, 4, 23, 3), groups=64, base_width=4)

@register_model
def se_resnext101_64x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-101 (64x4d)."""
    return build_resnet("se_resnext101_64x4d", True, kwargs, block=Bottleneck, layers=(3, 4, 23, 3), groups=64, base_width=4)

# 26-layer ResNeXts (two bottlenecks per stage): the release's SE-ResNeXt-26 (32x4d) as timm's legacy
# models hold it, and timm's "d" (deep stem, ResNet-D shortcuts) and "t" (tiered deep stem) variants.
_RESNEXT26 = dict(block=Bottleneck, layers=(2, 2, 2, 2), groups=32, base_width=4)
_RESNEXT26D = dict(_RESNEXT26, stem_type="deep", avg_pool_shortcut=True)
_RESNEXT26T = dict(_RESNEXT26, stem_type="deep_tiered", avg_pool_shortcut=True)

@register_model
def resnext26_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-26 (32x4d): two bottlenecks per stage."""
    return build_resnet("resnext26_32x4d", False, kwargs, **_RESNEXT26)

@register_model
def se_resnext26_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-26 (32x4d) (timm's legacy_seresnext26_32x4d)."""
    return build_resnet("se_resnext26_32x4d", True, kwargs, **_RESNEXT26)

@register_model
def resnext26d_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-26-D (32x4d): deep stem (32, 32, 64) and average-pool shortcuts (He et al. 2019)."""
    return build_resnet("resnext26d_32x4d", False, kwargs, **_RESNEXT26D)

@register_model
def se_resnext26d_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-26-D (32x4d) (timm's seresnext26d_32x4d)."""
    return build_resnet("se_resnext26d_32x4d", True, kwargs, **_RESNEXT26D)

@register_model
def resnext26t_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-26-T (32x4d): tiered deep stem (24, 32, 64) and average-pool shortcuts."""
    return build_resnet("resnext26t_32x4d", False, kwargs, **_RESNEXT26T)

@register_model
def se_resnext26t_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-26-T (32x4d) (timm's seresnext26t_32x4d)."""
    return build_resnet("se_resnext26t_32x4d", True, kwargs, **_RESNEXT26T)
# fmt: on

_SENET154 = dict(
    block=Bottleneck, layers=(3, 8, 36, 3), groups=64, base_width=4, stem_width=128, stem_type="deep",
    reduce_first=2, downsample_kernel=3,
)


@register_model
def senet154(**kwargs: Any) -> ResNet:
    """SENet-154 (Sec. 5.1, Appendix): SE-ResNeXt-152 (64x4d) with the first 1x1 of each bottleneck halved,
    a stem of three 3x3 convs, 3x3 stride-2 projections and dropout 0.2 before the classifier."""
    kwargs.setdefault("drop_rate", 0.2)
    return build_resnet("senet154", True, kwargs, **_SENET154)


@register_model
def senet154_plain(**kwargs: Any) -> ResNet:
    """SENet-154 without its SE blocks: the plain twin of `senet154`."""
    kwargs.setdefault("drop_rate", 0.2)
    return build_resnet("senet154_plain", False, kwargs, **_SENET154)
