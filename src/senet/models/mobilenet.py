"""MobileNet (v1, 1.0-224) and SE-MobileNet (paper Table 3), MobileNetV3-Large/Small with their plain twins.

MobileNet v1 (Howard et al. 2017, Table 1): a 3x3/2 conv (32) and 13 depthwise-separable layers
(3x3 depthwise conv, BN, ReLU, 1x1 pointwise conv, BN, ReLU), global pooling and the classifier:
4.2M params, 569 MMACs at 224.

SE-MobileNet placement (Table 3 gives only the totals, 572 MFLOPs / 4.7M params; this is our choice):
an SE block (r = 16) after the pointwise conv's BN-ReLU of each of the 13 layers, i.e. on each layer's
output, where a residual network puts it before the sum. It reproduces Table 3: the FCs over the 13
outputs (sum of 2C^2/16 plus biases) add 0.49M parameters, 4.23M -> 4.72M. SE after the depthwise conv
instead (on its 32 .. 1024 inputs) would add only 0.35M (4.59M), so it is not what the paper measured.
`se_stages` counts the network's resolutions by output stride 2^s: 1 (112x112 at 224), 2 (56), 3 (28),
4 (14), 5 (7), the numbering of the paper's ResNet stages conv2_x .. conv5_x (56 .. 7).

MobileNetV3 (Howard et al. 2019, Tables 1-2) uses SE as part of its design: in the inverted residual
blocks marked SE, after the depthwise conv, with r = 4 of the expanded width rounded to a multiple of 8
and a hard-sigmoid gate (`reduction=4, gate="hard_sigmoid", se_divisor=8`); the SE keywords change these.
`mobilenet_v3_large` / `_small` are the published networks (5,483,032 / 2,542,856 params; 0.217 / 0.057
GMACs at 224); `mobilenet_v3_large_plain` / `_small_plain` are the same networks without SE.
`bn_eps`, `bn_momentum`: every BatchNorm's epsilon and momentum (torchvision's MobileNetV3 uses 1e-3 and
0.01; its checkpoints need `bn_eps=1e-3` to give its outputs).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from senet.layers import SEConfig, merge
from senet.layers.drop import as_drop_path, check_drop_path_rate, drop_path_rates, make_drop_path
from senet.models.base import ImageClassifier, Stage, init_weights_he
from senet.models.blocks import ConvBnAct, build_model, check_se_placement
from senet.models.features import FeatureInfo, StageInfo, feature
from senet.models.registry import declare_plain_twin, register_model

STAGES = (1, 2, 3, 4, 5)
STAGE_NAMES = "output stride 2^s: 1 = 112x112 .. 5 = 7x7 at 224"
V1_PLACEMENT = "after each depthwise-separable layer's pointwise conv"
V3_PLACEMENT = "after the depthwise conv of the blocks MobileNetV3 marks SE"

# ---------------------------------------------------------------------------------------------------
# MobileNet v1

# Pointwise output channels of the 13 depthwise-separable layers (Table 1), by stage (output stride 2^s).
# The first layer of stages 2 .. 5 has a stride-2 depthwise conv.
MOBILENET_V1 = {1: (64,), 2: (128, 128), 3: (256, 256), 4: (512,) * 6, 5: (1024, 1024)}


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv-BN-ReLU, 1x1 pointwise conv-BN-ReLU, then SE on the output (Fig. 3 of Howard et al.)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, se: SEConfig | None) -> None:
        super().__init__()
        self.dw = ConvBnAct(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pw = ConvBnAct(in_channels, out_channels, 1)
        if se is not None:
            self.se = se.build(out_channels)


class MobileNetV1(ImageClassifier):
    """MobileNet 1.0 (`width_multiplier` alpha scales every width). Input (N, in_chans, H, W), H, W >= 32."""

    def __init__(
        self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, width_multiplier: float = 1.0,
        se: SEConfig | None = None, name: str = "mobilenet_v1",
    ) -> None:
        super().__init__()
        check_se_placement(name, se, placement=V1_PLACEMENT,
                           stages=STAGES, stage_names=STAGE_NAMES)
        self.in_chans = in_chans
        self.se_config = se
        in_channels = int(32 * width_multiplier)
        self.stem = ConvBnAct(in_chans, in_channels, 3, 2)
        index = 1
        for stage, widths in MOBILENET_V1.items():
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for i, channels in enumerate(widths):
                out_channels = int(channels * width_multiplier)
                stride = 2 if stage > 1 and i == 0 else 1
                layer_se = None if se is None else se.for_stage(stage, STAGES)
                layers[f"conv_dw_{index}"] = DepthwiseSeparable(in_channels, out_channels, stride, layer_se)
                in_channels, index = out_channels, index + 1
            self.add_module(f"stage{stage}", Stage(layers))
        self.feature_info = FeatureInfo(
            feature(f"stage{stage}", int(widths[-1] * width_multiplier), 2**stage) for stage, widths in MOBILENET_V1.items()
        )
        self.stage_info = StageInfo({f"stage{stage}": stage for stage in MOBILENET_V1}, STAGES, V1_PLACEMENT)
        self.init_head(in_channels, num_classes, drop_rate)
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.check_input(x)
        x = self.stem(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        return self.stage5(x)


@register_model
def mobilenet_v1(**kwargs: Any) -> MobileNetV1:
    """MobileNet 1.0-224 (Table 3): 4.2M params, 569 MMACs, 28.4% top-1 error."""
    return build_model(MobileNetV1, "mobilenet_v1", False, kwargs, extra_kwargs=("width_multiplier",))


@register_model
def se_mobilenet_v1(**kwargs: Any) -> MobileNetV1:
    """SE-MobileNet 1.0-224 (Table 3): 4.7M params, 572 MMACs, 25.3% top-1 error; SE (r = 16) on each of
    the 13 layer outputs."""
    return build_model(MobileNetV1, "se_mobilenet_v1", True, kwargs, extra_kwargs=("width_multiplier",))


# ---------------------------------------------------------------------------------------------------
# MobileNetV3

# Per block (Tables 1 and 2 of Howard et al. 2019): kernel, expanded width, output width, SE, activation, stride.
MOBILENET_V3_LARGE = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hard_swish", 2),
    (3, 200, 80, False, "hard_swish", 1),
    (3, 184, 80, False, "hard_swish", 1),
    (3, 184, 80, False, "hard_swish", 1),
    (3, 480, 112, True, "hard_swish", 1),
    (3, 672, 112, True, "hard_swish", 1),
    (5, 672, 160, True, "hard_swish", 2),
    (5, 960, 160, True, "hard_swish", 1),
    (5, 960, 160, True, "hard_swish", 1),
)
MOBILENET_V3_SMALL = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hard_swish", 2),
    (5, 240, 40, True, "hard_swish", 1),
    (5, 240, 40, True, "hard_swish", 1),
    (5, 120, 48, True, "hard_swish", 1),
    (5, 144, 48, True, "hard_swish", 1),
    (5, 288, 96, True, "hard_swish", 2),
    (5, 576, 96, True, "hard_swish", 1),
    (5, 576, 96, True, "hard_swish", 1),
)
# The MobileNetV3 SE: r = 4 of the expanded width, rounded to a multiple of 8, hard-sigmoid gate.
MOBILENET_V3_SE = SEConfig(reduction=4, gate="hard_sigmoid", divisor=8)


def v3_se_stages(blocks: tuple[tuple[int, int, int, bool, str, int], ...]) -> tuple[int, ...]:
    """The stages (output stride 2^s) that hold a MobileNetV3 block marked SE: a per-stage reduction's stages."""
    stages, stride = set(), 2
    for *_, has_se, _, block_stride in blocks:
        stride *= block_stride
        if has_se:
            stages.add(stride.bit_length() - 1)
    return tuple(sorted(stages))


class InvertedResidual(nn.Module):
    """1x1 expansion, kxk depthwise conv, SE on the expanded width, linear 1x1 projection, identity shortcut
    when the shape is kept (MobileNetV2/V3 bottleneck, Fig. 4 of Howard et al. 2019)."""

    def __init__(
        self, in_channels: int, kernel_size: int, expanded: int, out_channels: int, act: str, stride: int,
        se: SEConfig | None, bn: dict[str, float] | None = None, drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        bn = bn or {}  # BatchNorm options (bn_eps, bn_momentum)
        # The first Large block has expansion 1 and no expansion conv.
        self.expand = ConvBnAct(in_channels, expanded, 1, act=act, **bn) if expanded != in_channels else nn.Identity()
        self.dw = ConvBnAct(expanded, expanded, kernel_size, stride, groups=expanded, act=act, **bn)
        self.se = None if se is None else se.build(expanded)
        self.project = ConvBnAct(expanded, out_channels, 1, act=None, **bn)
        self.has_shortcut = stride == 1 and in_channels == out_channels
        self.drop_path = make_drop_path(drop_path if self.has_shortcut else 0.0)

    def forward(self, x: Tensor) -> Tensor:
        out = self.dw(self.expand(x))
        se = self.se
        if se is not None:
            out = se(out)
        if not self.has_shortcut:
            return self.project(out)
        return merge(self.project.conv(out), x, norm=self.project.bn, drop_path=as_drop_path(self.drop_path))


class MobileNetV3(ImageClassifier):
    """MobileNetV3: 3x3/2 stem (16, h-swish), inverted residual blocks, 1x1 conv, pooling, 1x1 head (1280 or
    1024, h-swish), dropout, classifier. `se=None` removes every SE block (the plain twin).

    Input (N, in_chans, H, W), H, W >= 32.
    """

    global_pool_types = ("avg", "max", "avgmax")  # the head's hidden layer takes one vector per channel

    def __init__(
        self, blocks: tuple[tuple[int, int, int, bool, str, int], ...], last_channels: int, head_channels: int, *,
        num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, se: SEConfig | None = None,
        name: str = "mobilenet_v3", bn_eps: float = 1e-5, bn_momentum: float = 0.1, drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_se_placement(name, se, placement=V3_PLACEMENT,
                           stages=STAGES, stage_names=STAGE_NAMES)
        self.in_chans = in_chans
        self.se_config = se
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.stem = ConvBnAct(in_chans, 16, 3, 2, act="hard_swish", **bn)
        in_channels, stride = 16, 2
        layers: list[nn.Module] = []
        # Stochastic depth over the blocks with an identity shortcut (rate * i / (n - 1) over all blocks).
        se_stages = v3_se_stages(blocks)
        rates = drop_path_rates(check_drop_path_rate(drop_path_rate, name), len(blocks))
        # A stage ends before each stride-2 block (the stem, where the first block strides) and with conv_last.
        stages = [feature("stem", 16, 2)] if blocks[0][5] == 2 else []
        block_stages: dict[str, int] = {}  # each block's stage: log2 of its output stride
        for index, ((kernel_size, expanded, out_channels, has_se, act, block_stride), rate) in enumerate(zip(blocks, rates)):
            if index > 0 and block_stride == 2:
                stages.append(feature(f"blocks.{index - 1}", in_channels, stride))
            stride *= block_stride
            block_stages[f"blocks.{index}"] = stride.bit_length() - 1
            block_se = se.for_stage(stride.bit_length() - 1, se_stages) if se is not None and has_se else None
            layers.append(
                InvertedResidual(in_channels, kernel_size, expanded, out_channels, act, block_stride, block_se, bn, rate)
            )
            in_channels = out_channels
        self.blocks = Stage(*layers)
        self.conv_last = ConvBnAct(in_channels, last_channels, 1, act="hard_swish", **bn)
        self.feature_info = FeatureInfo(stages + [feature("conv_last", last_channels, stride)])
        self.stage_info = StageInfo(block_stages, STAGES, V3_PLACEMENT, MOBILENET_V3_SE)
        # The head's hidden layer acts on the pooled vector (no BN), so it is a linear layer.
        self.head_hidden = nn.Sequential(nn.Linear(last_channels, head_channels), nn.Hardswish(inplace=True))
        self.init_head(head_channels, num_classes, drop_rate)
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.check_input(x)
        return self.conv_last(self.blocks(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool, 1x1 head layer with h-swish, dropout, classifier (`pre_logits`: the head layer's output)."""
        x = self.head_hidden(self.global_pool(x).flatten(1))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


V3_KWARGS = ("bn_eps", "bn_momentum", "drop_path_rate")
LARGE = dict(blocks=MOBILENET_V3_LARGE, last_channels=960, head_channels=1280, se_defaults=MOBILENET_V3_SE,
             extra_kwargs=V3_KWARGS)
SMALL = dict(blocks=MOBILENET_V3_SMALL, last_channels=576, head_channels=1024, se_defaults=MOBILENET_V3_SE,
             extra_kwargs=V3_KWARGS)


@register_model
def mobilenet_v3_large(**kwargs: Any) -> MobileNetV3:
    """MobileNetV3-Large 1.0: 5,483,032 params, 0.217 GMACs at 224; SE in 8 of its 15 blocks."""
    return build_model(MobileNetV3, "mobilenet_v3_large", True, kwargs, **LARGE)


@register_model
def mobilenet_v3_large_plain(**kwargs: Any) -> MobileNetV3:
    """MobileNetV3-Large 1.0 without its SE blocks: the plain twin of `mobilenet_v3_large`."""
    return build_model(MobileNetV3, "mobilenet_v3_large_plain", False, kwargs, **LARGE)


@register_model
def mobilenet_v3_small(**kwargs: Any) -> MobileNetV3:
    """MobileNetV3-Small 1.0: 2,542,856 params, 0.057 GMACs at 224; SE in 9 of its 11 blocks."""
    return build_model(MobileNetV3, "mobilenet_v3_small", True, kwargs, **SMALL)


@register_model
def mobilenet_v3_small_plain(**kwargs: Any) -> MobileNetV3:
    """MobileNetV3-Small 1.0 without its SE blocks: the plain twin of `mobilenet_v3_small`."""
    return build_model(MobileNetV3, "mobilenet_v3_small_plain", False, kwargs, **SMALL)


declare_plain_twin("mobilenet_v3_large", "mobilenet_v3_large_plain")
declare_plain_twin("mobilenet_v3_small", "mobilenet_v3_small_plain")
