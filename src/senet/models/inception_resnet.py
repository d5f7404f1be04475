"""Inception-ResNet-v2 and SE-Inception-ResNet-v2 at 299x299 (paper Table 2: 11.75 -> 11.76 GFLOPs,
20.37% -> 19.80% top-1 error).

Layout: the released TF-slim network (Szegedy et al. 2017, as in the public PyTorch ports), 55,843,464
parameters: stem to 35x35x192, Mixed_5b (320), 10 x Inception-ResNet-A (block35, scale 0.17),
Reduction-A (Mixed_6a, 1088), 20 x Inception-ResNet-B (block17, scale 0.10), Reduction-B (Mixed_7a,
2080), 9 x Inception-ResNet-C (block8, scale 0.20) and a last block8 with scale 1 and no ReLU, a 1x1
conv to 1536, global pooling, dropout (TF-slim's keep probability 0.8) and the classifier.

SE placement (the issue and the paper's rule for residual networks, Fig. 3): on the residual branch,
after its linear 1x1 up-projection and before the scaled addition, x + scale * SE(branch(x)); one per
residual unit (40 in all). Mixed_5b and the reduction modules are not residual and carry none.
`se_stages` counts the grids as the module names do: 5 (block35, 35x35), 6 (block17), 7 (block8).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from senet.layers import SEConfig, merge
from senet.layers.drop import as_drop_path, check_drop_path_rate, drop_path_rates, make_drop_path
from senet.models.base import ImageClassifier, Stage, init_weights_he
from senet.models.blocks import (
    ConvBnAct,
    InceptionModule,
    build_model,
    check_se_placement,
)
from senet.models.features import FeatureInfo, StageInfo, feature
from senet.models.registry import register_model

PLACEMENT = "on each residual branch before the scaled addition"
# The repeated units of the three grids, numbered as the module names count them: 35x35 (block35), 17x17, 8x8.
STAGE_MODULES = {"repeat": 5, "repeat_1": 6, "repeat_2": 7}

conv = partial(ConvBnAct, bn_eps=1e-3)  # the TF release's BatchNorm epsilon


class InceptionResNetUnit(nn.Module):
    """x + scale * SE(up(concat(branches(x)))), then ReLU (Figs. 16-19 of Szegedy et al. 2017).

    `up` is the linear 1x1 convolution (with bias, no BN) that restores the input width. Input and output
    (N, C, H, W).
    """

    def __init__(
        self, branches: dict[str, nn.Module], mixed_channels: int, channels: int, scale: float, *,
        se: SEConfig | None = None, activate: bool = True, drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.mixed = InceptionModule(branches, mixed_channels)
        self.up = nn.Conv2d(mixed_channels, channels, 1)
        self.se = None if se is None else se.build(channels)
        self.act = nn.ReLU(inplace=True) if activate else nn.Identity()
        self.drop_path = make_drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.up(self.mixed(x))
        # act(x + drop_path(scale * SE(residual)))
        return merge(residual, x, se=self.se, act=self.act, scale=self.scale, drop_path=as_drop_path(self.drop_path))


def block35(se: SEConfig | None, drop_path: float = 0.0) -> InceptionResNetUnit:
    """Inception-ResNet-A on the 35x35 grid (320 channels)."""
    return InceptionResNetUnit({
        "branch0": conv(320, 32, 1),
        "branch1": nn.Sequential(conv(320, 32, 1), conv(32, 32, 3)),
        "branch2": nn.Sequential(conv(320, 32, 1), conv(32, 48, 3), conv(48, 64, 3)),
    }, 128, 320, 0.17, se=se, drop_path=drop_path)


def block17(se: SEConfig | None, drop_path: float = 0.0) -> InceptionResNetUnit:
    """Inception-ResNet-B on the 17x17 grid (1088 channels)."""
    return InceptionResNetUnit({
        "branch0": conv(1088, 192, 1),
        "branch1": nn.Sequential(conv(1088, 128, 1), conv(128, 160, (1, 7)), conv(160, 192, (7, 1))),
    }, 384, 1088, 0.10, se=se, drop_path=drop_path)


def block8(
    se: SEConfig | None, scale: float = 0.20, activate: bool = True, drop_path: float = 0.0
) -> InceptionResNetUnit:
    """Inception-ResNet-C on the 8x8 grid (2080 channels)."""
    return InceptionResNetUnit({
        "branch0": conv(2080, 192, 1),
        "branch1": nn.Sequential(conv(2080, 192, 1), conv(192, 224, (1, 3)), conv(224, 256, (3, 1))),
    }, 448, 2080, scale, se=se, activate=activate, drop_path=drop_path)


class InceptionResNetV2(ImageClassifier):
    """Inception-ResNet-v2 (55.8M params, 13.16 GMACs at 299 counted as conv + linear MACs).

    Input (N, in_chans, H, W), H, W >= 75; `forward_features` gives (N, 1536, H', W') (8x8 at 299).
    """

    default_input_size = (3, 299, 299)
    min_input_size = 75

    def __init__(
        self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2,
        se: SEConfig | None = None, name: str = "inception_resnet_v2", drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_se_placement(name, se, placement=PLACEMENT, stages=tuple(STAGE_MODULES.values()),
                           stage_names="block35, block17, block8 grids")
        self.in_chans = in_chans
        self.default_input_size = (in_chans, 299, 299)
        self.se_config = se
        se5, se6, se7 = (None if se is None else se.for_stage(s, (5, 6, 7)) for s in (5, 6, 7))
        self.stem = nn.Sequential(OrderedDict(
            conv2d_1a=conv(in_chans, 32, 3, 2, 0), conv2d_2a=conv(32, 32, 3, padding=0), conv2d_2b=conv(32, 64, 3),
            maxpool_3a=nn.MaxPool2d(3, 2), conv2d_3b=conv(64, 80, 1), conv2d_4a=conv(80, 192, 3, padding=0),
            maxpool_5a=nn.MaxPool2d(3, 2),
            mixed_5b=InceptionModule({
                "branch0": conv(192, 96, 1),
                "branch1": nn.Sequential(conv(192, 48, 1), conv(48, 64, 5)),
                "branch2": nn.Sequential(conv(192, 64, 1), conv(64, 96, 3), conv(96, 96, 3)),
                "branch3": nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv(192, 64, 1)),
            }, 320),
        ))
        # Stochastic depth: rate * i / (n - 1) over the 40 residual units.
        rates = drop_path_rates(check_drop_path_rate(drop_path_rate, name), 40)
        self.repeat = Stage(*(block35(se5, rates[i]) for i in range(10)))
        self.mixed_6a = InceptionModule({  # Reduction-A (k, l, m, n = 256, 256, 384, 384)
            "branch0": conv(320, 384, 3, 2, 0),
            "branch1": nn.Sequential(conv(320, 256, 1), conv(256, 256, 3), conv(256, 384, 3, 2, 0)),
            "branch2": nn.MaxPool2d(3, 2),
        }, 1088)
        self.repeat_1 = Stage(*(block17(se6, rates[10 + i]) for i in range(20)))
        self.mixed_7a = InceptionModule({  # Reduction-B
            "branch0": nn.Sequential(conv(1088, 256, 1), conv(256, 384, 3, 2, 0)),
            "branch1": nn.Sequential(conv(1088, 256, 1), conv(256, 288, 3, 2, 0)),
            "branch2": nn.Sequential(conv(1088, 256, 1), conv(256, 288, 3), conv(288, 320, 3, 2, 0)),
            "branch3": nn.MaxPool2d(3, 2),
        }, 2080)
        self.repeat_2 = Stage(
            *(block8(se7, drop_path=rates[30 + i]) for i in range(9)),
            block8(se7, scale=1.0, activate=False, drop_path=rates[39]),
        )
        self.conv2d_7b = conv(2080, 1536, 1)
        self.feature_info = FeatureInfo([  # as timm's inception_resnet_v2
            feature("stem.conv2d_2b", 64, 2), feature("stem.conv2d_4a", 192, 4), feature("repeat", 320, 8),
            feature("repeat_1", 1088, 16), feature("conv2d_7b", 1536, 32),
        ])
        self.stage_info = StageInfo(STAGE_MODULES, tuple(STAGE_MODULES.values()), PLACEMENT)
        self.init_head(1536, num_classes, drop_rate)
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.check_input(x)
        x = self.repeat(self.stem(x))
        x = self.repeat_1(self.mixed_6a(x))
        x = self.repeat_2(self.mixed_7a(x))
        return self.conv2d_7b(x)


@register_model
def inception_resnet_v2(**kwargs: Any) -> InceptionResNetV2:
    """Inception-ResNet-v2 at 299 (Table 2): 55,843,464 params."""
    return build_model(InceptionResNetV2, "inception_resnet_v2", False, kwargs, extra_kwargs=("drop_path_rate",))


@register_model
def se_inception_resnet_v2(**kwargs: Any) -> InceptionResNetV2:
    """SE-Inception-ResNet-v2 at 299 (Table 2): SE on the residual branch of each of the 40 units."""
    return build_model(InceptionResNetV2, "se_inception_resnet_v2", True, kwargs, extra_kwargs=("drop_path_rate",))
