"""VGG-16 with BatchNorm and SE-VGG-16 (paper Sec. 6.1, Table 2: 15.47 -> 15.48 GFLOPs, 27.02 -> 25.22 top-1 err).

VGG-16 (Simonyan & Zisserman 2015, configuration D) with a BatchNorm after every convolution, as the
paper trains it ("to facilitate training from scratch"): five blocks conv1 .. conv5 of 3x3 convolutions
(64, 128, 256, 512, 512 channels; 2, 2, 3, 3, 3 layers), each block closed by a 2x2/2 max-pool, then
fc6 (4096), fc7 (4096) with dropout and the classifier. The classifier input is an adaptive 7x7 average
pool of the last map, so any input size works and 224x224 gives the original 25,088 features.

SE placement (the paper does not draw it; our choice): an SE block after the BN-ReLU of every one of
the 13 convolutions, as VGG has no residual branch and every conv layer is the unit that produces a
feature map. This reproduces Table 2's cost: +0.2M parameters (r = 16) and ~0.03 GMACs, reported as
15.47 -> 15.48. `se_stages` counts VGG's own blocks conv1 .. conv5 (1 .. 5).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

from senet.layers import SEConfig
from senet.models.base import ImageClassifier, Stage, init_weights_he
from senet.models.blocks import ConvBnAct, build_model, check_se_placement
from senet.models.features import FeatureInfo, StageInfo, feature
from senet.models.registry import register_model

STAGES = (1, 2, 3, 4, 5)
PLACEMENT = "after every conv-BN-ReLU"
# Configuration D: (channels of each 3x3 conv) per block conv1 .. conv5.
VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG(ImageClassifier):
    """VGG with BatchNorm; `se` adds an SE block after every conv-BN-ReLU of the blocks in `se.stages`.

    Input (N, in_chans, H, W) with H, W >= 32; `forward_features` gives (N, 512, H/32, W/32).
    """

    global_pool_types = ("avg",)  # the head pools to the 7x7 map fc6 was trained on

    def __init__(
        self,
        config: tuple[tuple[int, ...], ...] = VGG16,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.5,
        se: SEConfig | None = None,
        name: str = "vgg",
    ) -> None:
        super().__init__()
        check_se_placement(name, se, placement=PLACEMENT, stages=STAGES,
                           stage_names="VGG blocks conv1 .. conv5")
        self.in_chans = in_chans
        self.se_config = se
        in_channels = in_chans
        self.feature_info = FeatureInfo(feature(f"conv{s}", w[-1], 2**s) for s, w in zip(STAGES, config))  # after the pools
        self.stage_info = StageInfo({f"conv{s}": s for s in STAGES}, STAGES, PLACEMENT)
        for stage, widths in zip(STAGES, config):
            stage_se = None if se is None else se.for_stage(stage, STAGES)
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for i, width in enumerate(widths, start=1):
                # The released VGG convolutions keep their bias next to BN (138,365,992 parameters).
                layers[f"conv{stage}_{i}"] = ConvBnAct(in_channels, width, 3, bias=True)
                if stage_se is not None:
                    layers[f"se{stage}_{i}"] = stage_se.build(width)
                in_channels = width
            layers["pool"] = nn.MaxPool2d(2, 2)
            self.add_module(f"conv{stage}", Stage(layers))
        self.pre_logits = nn.Sequential(OrderedDict(
            fc6=nn.Linear(in_channels * 7 * 7, 4096), act6=nn.ReLU(inplace=True), drop6=nn.Dropout(drop_rate),
            fc7=nn.Linear(4096, 4096), act7=nn.ReLU(inplace=True),
        ))
        self.init_head(4096, num_classes, drop_rate)
        # fc6 sees a 7x7 map as in the original; adaptive pooling gives it one for any input size.
        self.global_pool = nn.AdaptiveAvgPool2d(7)
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.check_input(x)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.conv4(x)
        return self.conv5(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """7x7 adaptive pool, fc6, fc7 (dropout `drop_rate` after each, VGG's 0.5), classifier."""
        x = self.pre_logits(self.global_pool(x).flatten(1))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


@register_model
def vgg16_bn(**kwargs: Any) -> VGG:
    """VGG-16 with BatchNorm (Table 2): 138.4M params, 15.47 GMACs at 224."""
    return build_model(VGG, "vgg16_bn", False, kwargs, config=VGG16)


@register_model
def se_vgg16_bn(**kwargs: Any) -> VGG:
    """SE-VGG-16 with BatchNorm (Table 2): SE after each of the 13 conv-BN-ReLUs, 15.48 GMACs."""
    return build_model(VGG, "se_vgg16_bn", True, kwargs, config=VGG16)
