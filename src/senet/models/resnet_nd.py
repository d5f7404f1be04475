"""SE-ResNet-18/34/50 for signals (1-D) and volumes or video (3-D), and their plain twins.

The SE block acts on any feature map U whose channels it can squeeze (paper Sec. 3); these networks are
`senet.models.resnet.ResNet` with `dims=1` or `dims=3`: the same blocks, stages and SE block, with every
convolution, BatchNorm, pooling and the squeeze acting over 1 or 3 axes. Kernels and strides are
isotropic (a 7-wide / 7x7x7 stem with stride 2, a 3-wide / 3x3x3 max-pool with stride 2, 3-wide / 3x3x3
convolutions, stride 2 at the start of conv3_x .. conv5_x), so the total stride is 32 on every axis.
All ResNet options apply (`se_position`, `se_stages`, `reduction`, `layout`, ...).

Default inputs: 1-D (1, 4096), a window of 4096 samples of a one-channel signal (a quarter second of
16 kHz audio, 8 s of a 500 Hz ECG lead; 128 positions at the last stage); 3-D (3, 16, 112, 112), a
16-frame RGB clip at 112x112 as in C3D and the 3-D ResNets of Hara et al. (1x4x4 at the last stage).
Any length / clip size works; `in_chans` sets the channels (e.g. 12 for a 12-lead ECG, 1 for CT).
"""

from __future__ import annotations

from typing import Any

from senet.models.registry import register_model
from senet.models.resnet import BasicBlock, Bottleneck, ResNet, build_resnet

DEFAULT_SIZES = {1: (4096,), 3: (16, 112, 112)}
DEFAULT_CHANNELS = {1: 1, 3: 3}
DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}


def build_nd(depth: int, dims: int, se: bool, kwargs: dict[str, Any]) -> ResNet:
    """(SE-)ResNet-`depth` over `dims` spatial axes, with the default input shape of that kind of data."""
    name = f"{'se_' if se else ''}resnet{depth}_{dims}d"
    kwargs.setdefault("in_chans", DEFAULT_CHANNELS[dims])
    block, layers = DEPTHS[depth]
    model = build_resnet(name, se, kwargs, block=block, layers=layers, dims=dims)
    model.default_input_size = (model.in_chans,) + DEFAULT_SIZES[dims]
    return model


# fmt: off
@register_model
def resnet18_1d(**kwargs: Any) -> ResNet:
    """ResNet-18 over one axis (signals, audio); default input (1, 4096)."""
    return build_nd(18, 1, False, kwargs)

@register_model
def se_resnet18_1d(**kwargs: Any) -> ResNet:
    """SE-ResNet-18 over one axis (signals, audio); default input (1, 4096)."""
    return build_nd(18, 1, True, kwargs)

@register_model
def resnet34_1d(**kwargs: Any) -> ResNet:
    """ResNet-34 over one axis; default input (1, 4096)."""
    return build_nd(34, 1, False, kwargs)

@register_model
def se_resnet34_1d(**kwargs: Any) -> ResNet:
    """SE-ResNet-34 over one axis; default input (1, 4096)."""
    return build_nd(34, 1, True, kwargs)

@register_model
def resnet50_1d(**kwargs: Any) -> ResNet:
    """ResNet-50 over one axis (paper layout: stride on the first 1x1); default input (1, 4096)."""
    return build_nd(50, 1, False, kwargs)

@register_model
def se_resnet50_1d(**kwargs: Any) -> ResNet:
    """SE-ResNet-50 over one axis; default input (1, 4096)."""
    return build_nd(50, 1, True, kwargs)

@register_model
def resnet18_3d(**kwargs: Any) -> ResNet:
    """ResNet-18 over three axes (video clips, volumes); default input (3, 16, 112, 112)."""
    return build_nd(18, 3, False, kwargs)

@register_model
def se_resnet18_3d(**kwargs: Any) -> ResNet:
    """SE-ResNet-18 over three axes (video clips, volumes); default input (3, 16, 112, 112)."""
    return build_nd(18, 3, True, kwargs)

@register_model
def resnet34_3d(**kwargs: Any) -> ResNet:
    """ResNet-34 over three axes; default input (3, 16, 112, 112)."""
    return build_nd(34, 3, False, kwargs)

@register_model
def se_resnet34_3d(**kwargs: Any) -> ResNet:
    """SE-ResNet-34 over three axes; default input (3, 16, 112, 112)."""
    return build_nd(34, 3, True, kwargs)

@register_model
def resnet50_3d(**kwargs: Any) -> ResNet:
    """ResNet-50 over three axes (paper layout: stride on the first 1x1); default input (3, 16, 112, 112)."""
    return build_nd(50, 3, False, kwargs)

@register_model
def se_resnet50_3d(**kwargs: Any) -> ResNet:
    """SE-ResNet-50 over three axes; default input (3, 16, 112, 112)."""
    return build_nd(50, 3, True, kwargs)
# fmt: on
