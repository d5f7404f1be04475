"""Parameter and multiply-accumulate counts from a forward pass over shapes (paper Tables 2, 3, 10, 13-16).

What counts as a MAC, as in the paper's "GFLOPs": every multiply-accumulate of a convolution or linear
layer, plus the SE block's own elementwise work: one accumulate per input element for the squeeze
(global pooling) and one multiply per element for the scale. BatchNorm, activations, residual additions
and the network's other pooling are not counted (they fold into neighbouring layers at inference or are
negligible); so ResNet-50 is 3.86 GMACs and SE-ResNet-50 3.87 at 224x224, as in Table 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from senet.errors import ConfigError
from senet.layers import SqueezeExcitation, se_impl
from senet.layers.nd import BATCHNORMS, CONVS
from senet.models.features import StageInfo

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONVS = (*CONVS, *_TRANSPOSED)


@dataclass
class StageComplexity:
    """One top-level part of a model (stem, a stage, the head)."""

    name: str
    output_shape: tuple[int, ...]
    params: int = 0
    se_params: int = 0
    macs: int = 0
    se_macs: int = 0
    se_blocks: int = 0


@dataclass
class Complexity:
    """Counts for one sample of `input_size` (C, *spatial). `se_*` is the part due to SE blocks."""

    input_size: tuple[int, ...]
    params: int
    se_params: int
    macs: int
    se_macs: int
    se_blocks: int
    stages: list[StageComplexity] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    @property
    def se_param_overhead(self) -> float:
        """SE parameters as a fraction of the rest of the network."""
        return self.se_params / max(1, self.params - self.se_params)

    @property
    def se_mac_overhead(self) -> float:
        return self.se_macs / max(1, self.macs - self.se_macs)

    def as_dict(self) -> dict[str, object]:
        return {
            "input_size": list(self.input_size),
            "params": self.params,
            "se_params": self.se_params,
            "macs": self.macs,
            "se_macs": self.se_macs,
            "se_blocks": self.se_blocks,
            "stages": [vars(s) | {"output_shape": list(s.output_shape)} for s in self.stages],
        }


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _conv_shape(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward for a convolution that gives its output's shape (an empty batch) without its weights."""
    transposed = isinstance(module, _TRANSPOSED)

    def forward(x: torch.Tensor) -> torch.Tensor:
        sides = []
        for i, side in enumerate(x.shape[2:]):
            kernel, stride, dilation = module.kernel_size[i], module.stride[i], module.dilation[i]
            if module.padding == "same":
                sides.append(side)
                continue
            pad = 0 if module.padding == "valid" else module.padding[i]
            if transposed:
                sides.append((side - 1) * stride - 2 * pad + dilation * (kernel - 1) + module.output_padding[i] + 1)
            else:
                sides.append((side + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1)
        return x.new_empty((x.shape[0], module.out_channels, *sides))

    return forward


def _linear_shape(module: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward for a linear layer that gives its output's shape (an empty batch) without its weights."""
    return lambda x: x.new_empty((*x.shape[:-1], module.out_features))


def _input_size(model: nn.Module, input_size: int | Sequence[int] | None) -> tuple[int, ...]:
    default = tuple(getattr(model, "default_input_size", (3, 224, 224)))
    if input_size is None:
        return default
    if isinstance(input_size, int):
        return (default[0],) + (input_size,) * (len(default) - 1)
    size = tuple(int(s) for s in input_size)
    if len(size) != len(default):
        raise ConfigError(f"input_size {size} does not fit the model's inputs {default}: give (C, *spatial) or one int")
    return size


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def complexity(model: nn.Module, input_size: int | Sequence[int] | None = None) -> Complexity:
    """Count parameters and MACs of `model` for one input of `input_size` (int side or (C, *spatial)).

    Runs one forward pass in eval mode over a batch of no samples, in which every convolution, linear
    layer and BatchNorm gives the shape of its output without touching its weights: nothing is computed,
    so a model of any size on any device, or built on the meta device (`with torch.device("meta"): ...`),
    is counted in milliseconds.
    """
    size = _input_size(model, input_size)

    se_modules = {m for m in model.modules() if isinstance(m, SqueezeExcitation)}
    se_members = {sub for m in se_modules for sub in m.modules()}
    top_level = dict(model.named_children())
    stage_of: dict[nn.Module, str] = {}
    for stage_name, child in top_level.items():
        for sub in child.modules():
            stage_of.setdefault(sub, stage_name)
    stages = {
        name: StageComplexity(
            name, (), count_params(child), sum(count_params(m) for m in se_modules if stage_of.get(m) == name)
        )
        for name, child in top_level.items()
    }
    for name in stages:
        stages[name].se_blocks = sum(1 for m in se_modules if stage_of.get(m) == name)

    totals = {"macs": 0, "se_macs": 0}

    def add(module: nn.Module, macs: int, se: bool) -> None:
        totals["macs"] += macs
        stage = stages.get(stage_of.get(module, ""))
        if stage is not None:
            stage.macs += macs
        if se:
            totals["se_macs"] += macs
            if stage is not None:
                stage.se_macs += macs

    def conv_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        per_sample = math.prod(output.shape[1:])
        macs = per_sample * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        add(module, macs, module in se_members)

    def linear_hook(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        add(module, math.prod(output.shape[1:]) * module.in_features, module in se_members)

    def se_hook(module: SqueezeExcitation, inputs: tuple, output: torch.Tensor) -> None:
        per_sample = math.prod(inputs[0].shape[1:])
        squeeze = per_sample if module.squeeze_mode != "none" else 0
        add(module, squeeze + per_sample, True)  # pooling accumulates + the scale's multiplies

    def shape_hook(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                stages[name].output_shape = tuple(output.shape[1:])

        return hook

    handles = []
    for module in model.modules():
        if isinstance(module, _CONVS):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, SqueezeExcitation):
            handles.append(module.register_forward_hook(se_hook))
    for name, child in top_level.items():
        handles.append(child.register_forward_hook(shape_hook(name)))

    # The layers with weights (the only ones with weights in senet's networks) give their output's shape
    # alone; everything else runs on the empty batch, which costs nothing and needs no device.
    shape_only: dict[nn.Module, Callable[[torch.Tensor], torch.Tensor]] = {}
    for module in model.modules():
        if isinstance(module, _CONVS):
            shape_only[module] = _conv_shape(module)
        elif isinstance(module, nn.Linear):
            shape_only[module] = _linear_shape(module)
        elif isinstance(module, BATCHNORMS):
            shape_only[module] = _identity
    for module, forward in shape_only.items():
        module.forward = forward  # type: ignore[method-assign]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), se_impl(model, "naive"):  # every SE block called as a module, so its hook fires
            model(torch.zeros((0,) + size))
    finally:
        for handle in handles:
            handle.remove()
        for module in shape_only:
            del module.forward
        model.train(was_training)

    return Complexity(
        input_size=size,
        params=count_params(model),
        se_params=sum(count_params(m) for m in se_modules),
        macs=totals["macs"],
        se_macs=totals["se_macs"],
        se_blocks=len(se_modules),
        stages=list(stages.values()),
    )


def stage_numbers(model: nn.Module) -> dict[str, int]:
    """{top-level module: its stage number} as the model's family declares it (`StageInfo`): ResNet's
    `layer1` .. `layer4` are stages 2 .. 5 (conv2_x .. conv5_x, paper Table 13), the numbers `se_stages`
    counts. Empty for a network that declares none."""
    info = getattr(model, "stage_info", None)
    return info.top_level() if isinstance(info, StageInfo) else {}
