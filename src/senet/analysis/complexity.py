"""Parameter and multiply-accumulate counts from an actual forward pass (paper Tables 2, 3, 10, 13-16).

What counts as a MAC, as in the paper's "GFLOPs": every multiply-accumulate of a convolution or linear
layer, plus the SE block's own elementwise work: one accumulate per input element for the squeeze
(global pooling) and one multiply per element for the scale. BatchNorm, activations, residual additions
and the network's other pooling are not counted (they fold into neighbouring layers at inference or are
negligible); so ResNet-50 is 3.86 GMACs and SE-ResNet-50 3.87 at 224x224, as in Table 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from senet.errors import ConfigError
from senet.layers import SqueezeExcitation, se_impl
from senet.layers.nd import BATCHNORMS, CONVS

_CONVS = (*CONVS, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


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

    Runs one forward pass in eval mode on the model's device; a model built on the meta device
    (`with torch.device("meta"): ...`) is counted without allocating or computing anything.
    """
    size = _input_size(model, input_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

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
        per_sample = output.numel() // output.shape[0]
        macs = per_sample * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        add(module, macs, module in se_members)

    def linear_hook(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        add(module, output.numel() // output.shape[0] * module.in_features, module in se_members)

    def se_hook(module: SqueezeExcitation, inputs: tuple, output: torch.Tensor) -> None:
        per_sample = inputs[0].numel() // inputs[0].shape[0]
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

    # On the meta device only shapes exist; BatchNorm (shape-preserving, not counted) would otherwise go
    # through a slow decomposition, so it is skipped there.
    skipped_norms = [m for m in model.modules() if isinstance(m, BATCHNORMS)] if device.type == "meta" else []
    for norm in skipped_norms:
        norm.forward = _identity  # type: ignore[method-assign]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), se_impl(model, "naive"):  # every SE block called as a module, so its hook fires
            model(torch.zeros((1,) + size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for norm in skipped_norms:
            del norm.forward
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


def min_input_size(model: nn.Module) -> int:
    """The smallest input side `model` is meant for: its own `min_input_size` where it declares one
    (Inception: 75), and never below its total stride, at which its last feature map (what the global
    pool sees) is one pixel. Smaller inputs still run, since padding keeps 1x1 maps alive, but then the
    network sees almost nothing and training BatchNorm normalises noise. Build `model` on the meta
    device to get this without computing anything."""
    declared = int(getattr(model, "min_input_size", 1))
    pool = getattr(model, "global_pool", None)
    if not isinstance(pool, nn.Module):
        return declared
    shapes: list[tuple[int, ...]] = []
    handle = pool.register_forward_pre_hook(lambda module, inputs: shapes.append(tuple(inputs[0].shape)))
    try:
        stats = complexity(model)
    finally:
        handle.remove()
    if not shapes or len(shapes[0]) < 3:
        return declared
    stride = max(-(-side // max(1, out)) for side, out in zip(stats.input_size[1:], shapes[0][2:]))
    return max(declared, stride)


def se_stage_numbers(name: str, kwargs: dict | None = None, candidates: Sequence[int] = range(1, 10)) -> dict[str, int]:
    """{top-level module name: its number in `se_stages`} for model `name` (an SE model or the SE twin of a
    plain one), found by building it on the meta device with SE in one stage at a time: ResNet's
    `layer1` .. `layer4` are stages 2 .. 5 (conv2_x .. conv5_x, paper Table 13)."""
    from senet.errors import SenetError
    from senet.models import create_model, is_se_model, se_twin

    if not is_se_model(name):
        name = se_twin(name)
        if name is None:
            return {}
    kwargs = {k: v for k, v in (kwargs or {}).items() if k != "se_stages"}
    numbers: dict[str, int] = {}
    for stage in candidates:
        try:
            with torch.device("meta"):
                model = create_model(name, **kwargs, se_stages=(stage,))
        except SenetError:
            continue
        for child_name, child in model.named_children():
            if any(isinstance(m, SqueezeExcitation) for m in child.modules()):
                numbers.setdefault(child_name, stage)
    return numbers
