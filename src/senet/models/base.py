"""What every senet model shares: the classifier API, He initialisation, input checks and stages.

API (as timm): `forward_features(x)` -> feature map, `forward_head(x, pre_logits=False)` -> logits,
`reset_classifier(num_classes, global_pool=None)`, `forward_intermediates(x, indices, ...)`,
`prune_intermediate_layers(indices)`, `set_grad_checkpointing(enable)`, and the attributes `num_classes`,
`in_chans`, `num_features`, `default_input_size` (C, H, W), `feature_info` (`senet.models.features`) and
`pretrained_cfg` / `default_cfg` (set by `create_model`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from senet.errors import ConfigError, check_choice
from senet.layers import BATCHNORM, CONV, MAXPOOL, GlobalPool, ShapeError, set_se_impl
from senet.layers.nd import AVGPOOL, BATCHNORMS, CONVS


def check_image_batch(
    x: Tensor, model: str, in_chans: int, spatial_dims: int, min_size: int, default_size: tuple[int, ...]
) -> Tensor:
    """x, after raising ShapeError unless it is (N, in_chans, *spatial) with every side >= `min_size`.

    A leaf for torch.fx (`torch.fx.wrap` below): a traced model keeps the check as one call node, so
    `symbolic_trace` and torchvision's `create_feature_extractor` see no branch on shapes. Skipped under
    torch.jit.trace, which checks its example input and would record the shape test as a constant.
    """
    if torch.jit.is_tracing():
        return x
    if x.dim() != spatial_dims + 2:
        axes = ", ".join("HWD"[:spatial_dims]) if spatial_dims > 1 else "L"
        raise ShapeError(f"{model} expects a {spatial_dims + 2}-D batch (N, C, {axes}), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ShapeError(
            f"{model} expects {in_chans} input channels, got {x.shape[1]} (input shape "
            f"{tuple(x.shape)}); build the model with in_chans={x.shape[1]} or convert the input"
        )
    if min(x.shape[2:]) < min_size:
        raise ShapeError(
            f"{model} needs inputs of at least {min_size}x{min_size} pixels, got shape "
            f"{tuple(x.shape)}; resize the input (default {tuple(default_size)})"
        )
    return x


torch.fx.wrap("check_image_batch")


@contextlib.contextmanager
def batchnorm_stats_kept(module: nn.Module) -> Iterator[None]:
    """Restore the BatchNorm running statistics of `module` on exit: checkpointing's recomputation of a
    forward pass must not count the batch twice."""
    norms = [m for m in module.modules() if isinstance(m, (*BATCHNORMS, nn.SyncBatchNorm))]
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for buffer, value in zip(m.buffers(recurse=False), buffers):
                    buffer.copy_(value)


class Stage(nn.Sequential):
    """A stage of a network: its units in order, each run under `torch.utils.checkpoint` (activations
    recomputed in backward instead of stored) while `grad_checkpointing` is set and the model trains.

    The same state-dict keys as `nn.Sequential`; BatchNorm statistics are updated once per step.
    """

    def __init__(self, *args: nn.Module) -> None:
        super().__init__(*args)
        self.grad_checkpointing = False  # set by ImageClassifier.set_grad_checkpointing

    def forward(self, x: Tensor) -> Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return self.forward_checkpointed(x)
        for module in self:
            x = module(x)
        return x

    def forward_checkpointed(self, x: Tensor) -> Tensor:
        for module in self:
            x = torch.utils.checkpoint.checkpoint(
                module, x, use_reentrant=False,
                context_fn=lambda m=module: (contextlib.nullcontext(), batchnorm_stats_kept(m)),
            )
        return x


# The head's global pooling, as timm's `global_pool=`: average, max, their mean, their concatenation (twice
# the features), or none ("", the feature map itself; only without a classifier).
POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


class ClassifierPool(nn.Module):
    """The classifier's global pooling (Sec. 5.1: average; timm's other choices by name), flattened:
    (N, C, *spatial) -> (N, C) (N, 2C for "catavgmax"); "" passes the map through."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        self.pool_type = check_choice("global_pool", pool_type, POOL_TYPES)
        self.avg = GlobalPool("avg")
        self.max = GlobalPool("max")

    def feat_mult(self) -> int:
        return 2 if self.pool_type == "catavgmax" else 1

    def forward(self, x: Tensor) -> Tensor:
        if self.pool_type == "":
            return x
        if self.pool_type == "avg":
            return self.avg(x).flatten(1)
        if self.pool_type == "max":
            return self.max(x).flatten(1)
        if self.pool_type == "avgmax":
            return (0.5 * (self.avg(x) + self.max(x))).flatten(1)
        return torch.cat([self.avg(x), self.max(x)], dim=1).flatten(1)

    def extra_repr(self) -> str:
        return repr(self.pool_type)


def feature_take_indices(stages: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """timm's rule: (the stage indices to return, the largest); None all stages, an int n the last n, a
    sequence those stages (negative ones count from the end)."""
    valid = f"the model has {stages} feature stages (feature_info): indices 0 .. {stages - 1}, -{stages} .. -1, or a count"
    if indices is None:
        indices = stages
    if isinstance(indices, int):
        if not 0 < indices <= stages:
            raise ConfigError(f"indices={indices} asks for the last {indices} stages; {valid}")
        take = list(range(stages - indices, stages))
    else:
        take = [i + stages if i < 0 else i for i in indices]
        if not take or any(not 0 <= i < stages for i in take):
            raise ConfigError(f"indices {list(indices)} out of range; {valid}")
    return take, max(take)


class _ReachedLastIndex(Exception):
    """Raised by a forward hook to end `forward_intermediates(stop_early=True)` at its last stage."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output


class ImageClassifier(nn.Module):
    """Base class: a feature extractor followed by global pooling, dropout and a linear classifier."""

    default_input_size = (3, 224, 224)  # (C, H, W); subclasses set `in_chans` (int)
    spatial_dims = 2
    min_input_size = 1  # the smallest side the network takes (valid-padded reductions need more)
    global_pool_types = POOL_TYPES  # the `global_pool` choices this head takes

    def init_head(self, num_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        self.num_features = num_features
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = ClassifierPool("avg")  # adaptive: any input size works (no fixed 7x7 pool)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one for `num_classes` (0 removes it); `global_pool` (timm's
        names, `POOL_TYPES`) also replaces the pooling before it ("" keeps the map: num_classes=0 only)."""
        if global_pool is not None:
            name = getattr(self, "name", type(self).__name__)
            check_choice(f"global_pool for {name}", global_pool, self.global_pool_types)
            if global_pool == "" and num_classes > 0:
                raise ConfigError(
                    f"global_pool='' leaves the feature map unpooled, which a classifier cannot take; "
                    f"pass num_classes=0 with it (got {num_classes})"
                )
            if isinstance(self.global_pool, ClassifierPool):
                self.global_pool = ClassifierPool(global_pool)
        self.num_classes = num_classes
        if hasattr(self, "pretrained_cfg"):
            self.pretrained_cfg = {**self.pretrained_cfg, "num_classes": num_classes}
        parameter = next(self.parameters())
        pooled = self.num_features * (self.global_pool.feat_mult() if isinstance(self.global_pool, ClassifierPool) else 1)
        self.fc = (
            nn.Linear(pooled, num_classes, device=parameter.device, dtype=parameter.dtype)
            if num_classes > 0 else nn.Identity()
        )

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name of `pretrained_cfg`."""
        return self.pretrained_cfg

    def set_se_impl(self, impl: str) -> ImageClassifier:
        """Run every SE block of this model "fused" (default) or "naive" (`senet.layers.set_se_impl`)."""
        return set_se_impl(self, impl)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def check_input(self, x: Tensor) -> Tensor:
        """x, after raising ShapeError unless it is (N, in_chans, *spatial), sides >= `min_input_size`
        (`check_image_batch`)."""
        return check_image_batch(
            x, type(self).__name__, self.in_chans, self.spatial_dims, self.min_input_size, self.default_input_size
        )

    # Modules of the head (and Inception-v3's auxiliary classifier), which `forward_features` does not run.
    head_modules = ("global_pool", "drop", "fc", "pre_logits", "head_hidden", "aux")

    def feature_modules(self) -> list[str]:
        """Names of the top-level modules `forward_features` runs, in order (`senet.models.features`)."""
        return [name for name, _ in self.named_children() if name not in self.head_modules]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Run every stage's units under `torch.utils.checkpoint` in training (timm's name): activation
        memory per stage instead of per layer, for one more forward pass in backward."""
        for module in self.modules():
            if isinstance(module, Stage):
                module.grad_checkpointing = enable

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's API: the maps of the `feature_info` stages `indices` (None all, n the last n, or a list) and
        the final features (`forward_features`; with `stop_early`, the last wanted stage's map, and nothing
        after it runs). (final, maps), or only maps with `intermediates_only`. `norm`: senet's networks end
        in no norm layer, so it changes nothing; `output_fmt` "NCHW" only."""
        if output_fmt != "NCHW":
            raise ConfigError(f"output_fmt {output_fmt!r}: senet's convolutional networks give NCHW maps only")
        take, last = feature_take_indices(len(self.feature_info), indices)
        modules = [self.feature_info[i]["module"] for i in take]
        last_module = self.feature_info[last]["module"]
        maps: dict[str, Tensor] = {}

        def keep(name: str) -> Any:
            def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
                maps[name] = output
                if (stop_early or intermediates_only) and name == last_module:
                    raise _ReachedLastIndex(output)
            return hook

        handles = [self.get_submodule(name).register_forward_hook(keep(name)) for name in dict.fromkeys(modules)]
        try:
            final = self.forward_features(x)
        except _ReachedLastIndex as reached:
            final = reached.output
        finally:
            for handle in handles:
                handle.remove()
        intermediates = [maps[name] for name in modules]
        return intermediates if intermediates_only else (final, intermediates)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """timm's API: drop the feature modules after the last stage of `indices` (replaced by nn.Identity) and,
        with `prune_head`, the classifier and its pooling; returns the stage indices kept."""
        take, last = feature_take_indices(len(self.feature_info), indices)
        top = self.feature_info[last]["module"].split(".")[0]
        names = self.feature_modules()
        for name in names[names.index(top) + 1:]:
            setattr(self, name, nn.Identity())
        if prune_head:
            self.reset_classifier(0, "" if "" in self.global_pool_types else None)
        return take

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def init_weights_he(model: nn.Module, zero_init_last: bool = False) -> None:
    """He (Kaiming) initialisation as in the paper's recipe (Sec. 5.1): conv fan-out, BN to identity.

    `zero_init_last` then calls `zero_init_last()` on every residual unit that has it (zero gamma in the
    unit's last BN), so each unit starts as its shortcut.
    """
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.is_meta:
            continue  # built on the meta device for counting: there are no values to initialise
        if isinstance(module, CONVS):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (*BATCHNORMS, nn.GroupNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    if zero_init_last:
        for module in model.modules():
            if hasattr(module, "zero_init_last") and callable(module.zero_init_last):
                module.zero_init_last()


__all__ = [
    "AVGPOOL", "BATCHNORM", "CONV", "MAXPOOL", "POOL_TYPES", "ClassifierPool", "ImageClassifier", "feature_take_indices", "Stage", "check_image_batch", "init_weights_he",
]  # (the lookups live in layers)
