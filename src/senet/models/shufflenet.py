"""ShuffleNet 1x (g = 3) and SE-ShuffleNet (paper Table 3: 140 -> 142 MFLOPs, 1.8M -> 2.4M params,
32.6% -> 31.0% top-1 error).

ShuffleNet v1 (Zhang et al. 2018, Table 1 and Fig. 2): a 3x3/2 conv (24) and a 3x3/2 max-pool, then
Stage2 .. Stage4 (240, 480, 960 output channels at 1/8, 1/16, 1/32 of the input; 4, 8, 4 units), global
pooling and the classifier. A unit's residual branch is a 1x1 group conv (bottleneck = 1/4 of the
stage's output channels) with BN-ReLU, a channel shuffle, a 3x3 depthwise conv with BN, and a 1x1 group
conv with BN. Stride-1 units add the identity; the first unit of a stage has a stride-2 depthwise conv,
averages the shortcut with a 3x3/2 pool and concatenates it, so its branch produces out - in channels.
A ReLU follows the addition or concatenation. The first 1x1 of Stage2 is not grouped (only 24 inputs).

SE placement (Table 3 gives only the totals; this is our choice): as in SE-ResNet, on the residual
branch after its last BN, before the addition (or concatenation), r = 16; in every unit (16 in all).
The branches are 216/240/480 (first units) and 240/480/960 channels wide, so the FCs add
sum 2C^2/16 (+ biases) = 0.62M parameters: 1.87M -> 2.48M, Table 3's 1.8M -> 2.4M. `se_stages` counts
the paper's stages 2, 3, 4.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from senet.layers import SEConfig, merge
from senet.layers.drop import as_drop_path, check_drop_path_rate, drop_path_rates, make_drop_path
from senet.models.base import ImageClassifier, Stage, init_weights_he
from senet.models.blocks import ConvBnAct, build_model, check_se_placement
from senet.models.features import FeatureInfo, StageInfo, feature
from senet.models.registry import register_model

STAGES = (2, 3, 4)
PLACEMENT = "on each unit's residual branch before the merge"
# Table 1: output channels per stage for each number of groups g (complexity 1x), and the units per stage.
STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
STAGE_UNITS = (4, 8, 4)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of the `groups` groups (Fig. 1c): (N, g*k, H, W) -> the same shape."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """The ShuffleNet unit of Fig. 2b (stride 1, addition) or 2c (stride 2, concatenation), with SE on the
    residual branch before the merge. Input (N, in_channels, H, W), output (N, out_channels, H/stride, W/stride).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, groups: int, stride: int, group_first: bool = True,
        se: SEConfig | None = None, drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.groups = groups
        self.stride = stride
        mid_channels = out_channels // 4
        branch_channels = out_channels - in_channels if stride == 2 else out_channels
        self.conv1 = ConvBnAct(in_channels, mid_channels, 1, groups=groups if group_first else 1)
        self.shuffle_groups = groups if group_first else 1
        self.dwconv = ConvBnAct(mid_channels, mid_channels, 3, stride, groups=mid_channels, act=None)
        self.conv2 = ConvBnAct(mid_channels, branch_channels, 1, groups=groups, act=None)
        self.se = None if se is None else se.build(branch_channels)
        self.act = nn.ReLU(inplace=True)
        self.drop_path = make_drop_path(drop_path if stride == 1 else 0.0)  # (only the units that add x)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        if self.shuffle_groups > 1:
            out = channel_shuffle(out, self.shuffle_groups)
        out = self.conv2.conv(self.dwconv(out))
        se = self.se
        if self.stride == 1:
            return merge(out, x, se=se, norm=self.conv2.bn, act=self.act, drop_path=as_drop_path(self.drop_path))
        out = self.conv2.bn(out)
        if se is not None:
            out = se(out)
        return self.act(torch.cat([F.avg_pool2d(x, 3, 2, 1), out], 1))


class ShuffleNetV1(ImageClassifier):
    """ShuffleNet v1, complexity 1x, `groups` g in {1, 2, 3, 4, 8}. Input (N, in_chans, H, W), H, W >= 32."""

    def __init__(
        self, *, groups: int = 3, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
        se: SEConfig | None = None, name: str = "shufflenet_v1", drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_se_placement(name, se, placement=PLACEMENT, stages=STAGES,
                           stage_names="ShuffleNet Stage2 .. Stage4")
        self.in_chans = in_chans
        self.se_config = se
        self.stem = nn.Sequential(OrderedDict(conv1=ConvBnAct(in_chans, 24, 3, 2), maxpool=nn.MaxPool2d(3, 2, 1)))
        in_channels = 24
        self.feature_info = FeatureInfo([feature("stem.conv1", 24, 2)] + [
            feature(f"stage{stage}", channels, 2 ** (stage + 1)) for stage, channels in zip(STAGES, STAGE_CHANNELS[groups])
        ])  # Conv1, then Stage2 .. Stage4 at 1/8 .. 1/32
        self.stage_info = StageInfo({f"stage{s}": s for s in STAGES}, STAGES, PLACEMENT)
        # Stochastic depth: rate * i / (n - 1) over all 16 units (the stride-2 ones have no identity to keep).
        rates = iter(drop_path_rates(check_drop_path_rate(drop_path_rate, name), sum(STAGE_UNITS)))
        for stage, out_channels, units in zip(STAGES, STAGE_CHANNELS[groups], STAGE_UNITS):
            stage_se = None if se is None else se.for_stage(stage, STAGES)
            layers = [
                ShuffleUnit(in_channels if i == 0 else out_channels, out_channels, groups=groups,
                            stride=2 if i == 0 else 1, group_first=not (stage == 2 and i == 0), se=stage_se,
                            drop_path=next(rates))
                for i in range(units)
            ]
            self.add_module(f"stage{stage}", Stage(*layers))
            in_channels = out_channels
        self.init_head(in_channels, num_classes, drop_rate)
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.check_input(x)
        x = self.stem(x)
        x = self.stage2(x)
        x = self.stage3(x)
        return self.stage4(x)


@register_model
def shufflenet_v1_g3(**kwargs: Any) -> ShuffleNetV1:
    """ShuffleNet 1x (g = 3) (Table 3): 1.9M params, 140 MMACs at 224."""
    return build_model(ShuffleNetV1, "shufflenet_v1_g3", False, kwargs, extra_kwargs=("drop_path_rate",), groups=3)


@register_model
def se_shufflenet_v1_g3(**kwargs: Any) -> ShuffleNetV1:
    """SE-ShuffleNet 1x (g = 3) (Table 3): SE (r = 16) on the residual branch of each of the 16 units."""
    return build_model(ShuffleNetV1, "se_shufflenet_v1_g3", True, kwargs, extra_kwargs=("drop_path_rate",), groups=3)
