"""BN-Inception and Inception-v3 with their SE twins (paper Sec. 3.3, Fig. 2; Table 2).

SE placement (Sec. 3.3, Fig. 2, and the official SE-BN-Inception release): an SE block on the output of
every inception module, after the concatenation of its branches, the reduction modules (3c, 4e;
Mixed_6a, Mixed_7a) included. The stem and Inception-v3's auxiliary classifier carry none.

`se_stages` counts the networks' own module names: inception_3x, 4x, 5x (3, 4, 5) for BN-Inception and
Mixed_5x, 6x, 7x (5, 6, 7) for Inception-v3, i.e. the modules at 1/8, 1/16 and 1/32 of the input.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any, NamedTuple

import torch.nn.functional as F
import torch
from torch import Tensor, nn

from senet.layers import SEConfig
from senet.models.base import ImageClassifier, Stage, init_weights_he
from senet.models.blocks import (
    ConvBnAct,
    InceptionModule,
    build_model,
    check_se_placement,
)
from senet.models.features import FeatureInfo, StageInfo, feature
from senet.models.registry import register_model

PLACEMENT = "on every inception module's concatenated output"
V3_STAGES = (5, 6, 7)  # Inception-v3's Mixed_5x .. 7x (modules mixed5 .. mixed7)

# ---------------------------------------------------------------------------------------------------
# BN-Inception (Ioffe & Szegedy 2015, Fig. 5), the layout of the Caffe release the SE authors built on.

# Per module: #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj.
# #1x1 = 0 marks a reduction module: its 3x3s have stride 2 and its max-pool passes the input through.
BN_INCEPTION: dict[int, tuple[tuple[str, int, int, int, int, int, str, int], ...]] = {
    3: (("3a", 64, 64, 64, 64, 96, "avg", 32),
        ("3b", 64, 64, 96, 64, 96, "avg", 64),
        ("3c", 0, 128, 160, 64, 96, "max", 0)),
    4: (("4a", 224, 64, 96, 96, 128, "avg", 128),
        ("4b", 192, 96, 128, 96, 128, "avg", 128),
        ("4c", 160, 128, 160, 128, 160, "avg", 128),
        ("4d", 96, 128, 192, 160, 192, "avg", 128),
        ("4e", 0, 128, 192, 192, 256, "max", 0)),
    5: (("5a", 352, 192, 320, 160, 224, "avg", 128),
        ("5b", 352, 192, 320, 192, 224, "max", 128)),
}


class ReductionPool(nn.Module):
    """The release's 3x3/2 max-pool with Caffe's ceil rounding, padded by one at the bottom and right.

    The padding changes nothing at even sizes (224 input: identical to the release) and makes odd sizes
    give ceil(H/2) like the 3x3/2 convolutions beside it, so any input size concatenates.
    """

    def forward(self, x: Tensor) -> Tensor:
        pad = (0, 1) * (x.dim() - 2)
        return F.max_pool2d(F.pad(x, pad, value=float("-inf")), 3, 2, ceil_mode=True)


def bn_inception_module(
    in_channels: int, n1x1: int, n3x3_reduce: int, n3x3: int, n_double_reduce: int, n_double: int,
    pool: str, pool_proj: int, se: SEConfig | None,
) -> InceptionModule:
    """One BN-Inception module: 1x1, 3x3, double 3x3 and pool branches, concatenated (then SE)."""
    conv = partial(ConvBnAct, bias=True)  # the Caffe release keeps conv biases before BN
    stride = 2 if n1x1 == 0 else 1
    branches: dict[str, nn.Module] = {}
    if n1x1:
        branches["branch1x1"] = conv(in_channels, n1x1, 1)
    branches["branch3x3"] = nn.Sequential(conv(in_channels, n3x3_reduce, 1), conv(n3x3_reduce, n3x3, 3, stride))
    branches["branch3x3dbl"] = nn.Sequential(
        conv(in_channels, n_double_reduce, 1), conv(n_double_reduce, n_double, 3), conv(n_double, n_double, 3, stride)
    )
    if stride == 2:
        branches["branch_pool"] = ReductionPool()
        pool_out = in_channels
    else:
        pooling = nn.AvgPool2d(3, 1, 1) if pool == "avg" else nn.MaxPool2d(3, 1, 1)
        branches["branch_pool"] = nn.Sequential(pooling, conv(in_channels, pool_proj, 1))
        pool_out = pool_proj
    return InceptionModule(branches, n1x1 + n3x3 + n_double + pool_out, se)


class BNInception(ImageClassifier):
    """BN-Inception (Inception with Batch Normalization) and SE-BN-Inception: 2.03 / 2.04 GMACs at 224.

    Stem: 7x7/2 conv (64), 3x3/2 max-pool, 1x1 (64), 3x3 (192), 3x3/2 max-pool (ceil rounding as the
    release); inception_3a-3c (28x28 at 224), 4a-4e (14x14), 5a-5b (7x7); global average pool; FC.
    No dropout (the BN-Inception paper removed it). Input (N, in_chans, H, W), any H, W >= 32.
    """

    def __init__(
        self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
        se: SEConfig | None = None, name: str = "bn_inception",
    ) -> None:
        super().__init__()
        check_se_placement(name, se, placement=PLACEMENT, stages=tuple(BN_INCEPTION),
                           stage_names="inception_3x, 4x, 5x")
        self.in_chans = in_chans
        self.se_config = se
        conv = partial(ConvBnAct, bias=True)
        self.stem = nn.Sequential(OrderedDict(
            conv1_7x7_s2=conv(in_chans, 64, 7, 2),
            pool1_3x3_s2=nn.MaxPool2d(3, 2, ceil_mode=True),
            conv2_3x3_reduce=conv(64, 64, 1),
            conv2_3x3=conv(64, 192, 3),
            pool2_3x3_s2=nn.MaxPool2d(3, 2, ceil_mode=True),
        ))
        in_channels = 192
        for stage, modules in BN_INCEPTION.items():
            stage_se = None if se is None else se.for_stage(stage, tuple(BN_INCEPTION))
            layers = OrderedDict()
            for module_name, *widths in modules:
                layers[f"inception_{module_name}"] = bn_inception_module(in_channels, *widths, se=stage_se)
                in_channels = layers[f"inception_{module_name}"].out_channels
            self.add_module(f"inception{stage}", Stage(layers))
        # The stem's convolutions at 1/2 and 1/4, then the last module at 1/8 (3b), 1/16 (4d) and 1/32.
        modules = self.inception3.inception_3b, self.inception4.inception_4d, self.inception5.inception_5b
        self.feature_info = FeatureInfo([
            feature("stem.conv1_7x7_s2", 64, 2), feature("stem.conv2_3x3", 192, 4),
            feature("inception3.inception_3b", modules[0].out_channels, 8),
            feature("inception4.inception_4d", modules[1].out_channels, 16),
            feature("inception5", modules[2].out_channels, 32),
        ])
        self.stage_info = StageInfo({f"inception{s}": s for s in BN_INCEPTION}, tuple(BN_INCEPTION), PLACEMENT)
        self.init_head(in_channels, num_classes, drop_rate)
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.check_input(x)
        x = self.stem(x)
        x = self.inception3(x)
        x = self.inception4(x)
        return self.inception5(x)


# ---------------------------------------------------------------------------------------------------
# Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture"), the TF/torchvision layout.

conv_v3 = partial(ConvBnAct, bn_eps=1e-3)  # the TF release's BatchNorm epsilon


def inception_a(in_channels: int, pool_features: int, se: SEConfig | None) -> InceptionModule:
    """35x35 module (Fig. 5): 1x1, 5x5, double 3x3 and average-pool branches."""
    return InceptionModule({
        "branch1x1": conv_v3(in_channels, 64, 1),
        "branch5x5": nn.Sequential(conv_v3(in_channels, 48, 1), conv_v3(48, 64, 5)),
        "branch3x3dbl": nn.Sequential(conv_v3(in_channels, 64, 1), conv_v3(64, 96, 3), conv_v3(96, 96, 3)),
        "branch_pool": nn.Sequential(nn.AvgPool2d(3, 1, 1), conv_v3(in_channels, pool_features, 1)),
    }, 64 + 64 + 96 + pool_features, se)


def inception_b(in_channels: int, se: SEConfig | None) -> InceptionModule:
    """35x35 -> 17x17 grid reduction (Fig. 10)."""
    return InceptionModule({
        "branch3x3": conv_v3(in_channels, 384, 3, 2, 0),
        "branch3x3dbl": nn.Sequential(conv_v3(in_channels, 64, 1), conv_v3(64, 96, 3), conv_v3(96, 96, 3, 2, 0)),
        "branch_pool": nn.MaxPool2d(3, 2),
    }, 384 + 96 + in_channels, se)


def inception_c(in_channels: int, channels_7x7: int, se: SEConfig | None) -> InceptionModule:
    """17x17 module with factorised 7x7 convolutions (Fig. 6): 1x7 and 7x1 pairs."""
    c7 = channels_7x7
    return InceptionModule({
        "branch1x1": conv_v3(in_channels, 192, 1),
        "branch7x7": nn.Sequential(conv_v3(in_channels, c7, 1), conv_v3(c7, c7, (1, 7)), conv_v3(c7, 192, (7, 1))),
        "branch7x7dbl": nn.Sequential(
            conv_v3(in_channels, c7, 1), conv_v3(c7, c7, (7, 1)), conv_v3(c7, c7, (1, 7)),
            conv_v3(c7, c7, (7, 1)), conv_v3(c7, 192, (1, 7)),
        ),
        "branch_pool": nn.Sequential(nn.AvgPool2d(3, 1, 1), conv_v3(in_channels, 192, 1)),
    }, 4 * 192, se)


def inception_d(in_channels: int, se: SEConfig | None) -> InceptionModule:
    """17x17 -> 8x8 grid reduction."""
    return InceptionModule({
        "branch3x3": nn.Sequential(conv_v3(in_channels, 192, 1), conv_v3(192, 320, 3, 2, 0)),
        "branch7x7x3": nn.Sequential(
            conv_v3(in_channels, 192, 1), conv_v3(192, 192, (1, 7)), conv_v3(192, 192, (7, 1)),
            conv_v3(192, 192, 3, 2, 0),
        ),
        "branch_pool": nn.MaxPool2d(3, 2),
    }, 320 + 192 + in_channels, se)


def split_1x3_3x1(channels: int) -> InceptionModule:
    """The expanded filter bank of Fig. 7: parallel 1x3 and 3x1 convolutions, concatenated."""
    return InceptionModule(
        {"1x3": conv_v3(channels, channels, (1, 3)), "3x1": conv_v3(channels, channels, (3, 1))}, 2 * channels
    )


def inception_e(in_channels: int, se: SEConfig | None) -> InceptionModule:
    """8x8 module with expanded filter banks (Fig. 7)."""
    return InceptionModule({
        "branch1x1": conv_v3(in_channels, 320, 1),
        "branch3x3": nn.Sequential(conv_v3(in_channels, 384, 1), split_1x3_3x1(384)),
        "branch3x3dbl": nn.Sequential(conv_v3(in_channels, 448, 1), conv_v3(448, 384, 3), split_1x3_3x1(384)),
        "branch_pool": nn.Sequential(nn.AvgPool2d(3, 1, 1), conv_v3(in_channels, 192, 1)),
    }, 320 + 768 + 768 + 192, se)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 grid (Sec. 4, Fig. 8): 5x5/3 avg-pool, 1x1 (128), 5x5 (768), FC.

    At 299 the 17x17 map pools to 5x5 exactly as in the paper; a map smaller than 17x17 (smaller inputs)
    is pooled adaptively to the 5x5 the convolution needs. Output (N, num_classes).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = conv_v3(in_channels, 128, 1)
        self.conv1 = conv_v3(128, 768, 5, padding=0)
        self.fc = nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[2:]) >= 17:
            x = F.avg_pool2d(x, 5, 3)
        else:
            x = F.adaptive_avg_pool2d(x, 5)
        x = self.conv1(self.conv0(x))
        return self.fc(x.mean((2, 3)))


class InceptionOutputs(NamedTuple):
    """What Inception-v3 with `aux_logits=True` returns in training mode."""

    logits: Tensor
    aux_logits: Tensor


class InceptionV3(ImageClassifier):
    """Inception-v3 and SE-Inception-v3 at 299x299: 23.8M params (27.2M with the auxiliary head), 5.71 GMACs.

    `aux_logits=True` adds the auxiliary classifier after Mixed_6e; in training mode `forward` then returns
    `InceptionOutputs(logits, aux_logits)`; the caller combines the losses (the TF-slim recipe adds the
    auxiliary loss with weight 0.4). In eval mode, and in `forward_features`, the auxiliary head does not run.
    Input (N, in_chans, H, W), H, W >= 75.
    """

    default_input_size = (3, 299, 299)
    min_input_size = 75

    def __init__(
        self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5, aux_logits: bool = False,
        se: SEConfig | None = None, name: str = "inception_v3",
    ) -> None:
        super().__init__()
        check_se_placement(name, se, placement=PLACEMENT, stages=V3_STAGES, stage_names="Mixed_5x, 6x, 7x")
        self.in_chans = in_chans
        self.default_input_size = (in_chans, 299, 299)
        self.se_config = se
        se5, se6, se7 = (None if se is None else se.for_stage(s, (5, 6, 7)) for s in (5, 6, 7))
        self.stem = nn.Sequential(OrderedDict(
            Conv2d_1a_3x3=conv_v3(in_chans, 32, 3, 2, 0), Conv2d_2a_3x3=conv_v3(32, 32, 3, padding=0),
            Conv2d_2b_3x3=conv_v3(32, 64, 3), maxpool1=nn.MaxPool2d(3, 2),
            Conv2d_3b_1x1=conv_v3(64, 80, 1), Conv2d_4a_3x3=conv_v3(80, 192, 3, padding=0), maxpool2=nn.MaxPool2d(3, 2),
        ))
        self.mixed5 = Stage(OrderedDict(
            Mixed_5b=inception_a(192, 32, se5), Mixed_5c=inception_a(256, 64, se5), Mixed_5d=inception_a(288, 64, se5),
        ))
        self.mixed6 = Stage(OrderedDict(
            Mixed_6a=inception_b(288, se6), Mixed_6b=inception_c(768, 128, se6), Mixed_6c=inception_c(768, 160, se6),
            Mixed_6d=inception_c(768, 160, se6), Mixed_6e=inception_c(768, 192, se6),
        ))
        self.aux = InceptionAux(768, num_classes) if aux_logits else None
        self.mixed7 = Stage(OrderedDict(
            Mixed_7a=inception_d(768, se7), Mixed_7b=inception_e(1280, se7), Mixed_7c=inception_e(2048, se7),
        ))
        self.feature_info = FeatureInfo([  # as timm's inception_v3
            feature("stem.Conv2d_2b_3x3", 64, 2), feature("stem.Conv2d_4a_3x3", 192, 4), feature("mixed5", 288, 8),
            feature("mixed6", 768, 16), feature("mixed7", 2048, 32),
        ])
        self.stage_info = StageInfo({f"mixed{s}": s for s in V3_STAGES}, V3_STAGES, PLACEMENT)
        self.init_head(2048, num_classes, drop_rate)
        init_weights_he(self)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (and the auxiliary one, if present) for `num_classes`."""
        super().reset_classifier(num_classes, global_pool)
        if self.aux is not None:
            device = self.aux.conv0.conv.weight.device
            self.aux.fc = nn.Linear(768, num_classes, device=device) if num_classes > 0 else nn.Identity()

    def forward_pre_aux(self, x: Tensor) -> Tensor:
        """Stem to Mixed_6e: the 17x17 map (at 299) the auxiliary classifier reads."""
        x = self.check_input(x)
        return self.mixed6(self.mixed5(self.stem(x)))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.mixed7(self.forward_pre_aux(x))

    def forward(self, x: Tensor) -> Tensor | InceptionOutputs:  # type: ignore[override]
        x = self.forward_pre_aux(x)
        aux = self.aux(x) if self.aux is not None and self.training else None
        logits = self.forward_head(self.mixed7(x))
        return logits if aux is None else InceptionOutputs(logits, aux)


# ---------------------------------------------------------------------------------------------------

@register_model
def bn_inception(**kwargs: Any) -> BNInception:
    """BN-Inception (Table 2): 2.03 GMACs at 224, 25.38% top-1 error."""
    return build_model(BNInception, "bn_inception", False, kwargs)


@register_model
def se_bn_inception(**kwargs: Any) -> BNInception:
    """SE-BN-Inception (Table 2, the official release): SE on each of the 10 inception modules, 2.04 GMACs."""
    return build_model(BNInception, "se_bn_inception", True, kwargs)


@register_model
def inception_v3(**kwargs: Any) -> InceptionV3:
    """Inception-v3 at 299 (`aux_logits=True` adds the auxiliary classifier: 27,161,264 params)."""
    return build_model(InceptionV3, "inception_v3", False, kwargs, extra_kwargs=("aux_logits",))


@register_model
def se_inception_v3(**kwargs: Any) -> InceptionV3:
    """SE-Inception-v3 at 299: SE on each of the 11 Mixed modules."""
    return build_model(InceptionV3, "se_inception_v3", True, kwargs, extra_kwargs=("aux_logits",))
