"""What every senet model shares: the classifier API, He initialisation, input checks and stages.

API (as timm): `forward_features(x)` -> feature map, `forward_head(x, pre_logits=False)` -> logits,
`reset_classifier(num_classes)`, `set_grad_checkpointing(enable)`, and the attributes `num_classes`,
`in_chans`, `num_features`, `default_input_size` (C, H, W) and `feature_info` (`senet.models.features`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from senet.layers import BATCHNORM, CONV, MAXPOOL, GlobalPool, ShapeError, set_se_impl
from senet.layers.nd import AVGPOOL, BATCHNORMS, CONVS


def check_image_batch(
    x: Tensor, model: str, in_chans: int, spatial_dims: int, min_size: int, default_size: tuple[int, ...]
) -> Tensor:
    """x, after raising ShapeError unless it is (N, in_chans, *spatial) with every side >= `min_size`.

    A leaf for torch.fx (`torch.fx.wrap` below): a traced model keeps the check as one call node, so
    `symbolic_trace` and torchvision's `create_feature_extractor` see no branch on shapes.
    """
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


class ImageClassifier(nn.Module):
    """Base class: a feature extractor followed by global pooling, dropout and a linear classifier."""

    # (No class-level annotations: under `from __future__ import annotations` TorchScript cannot read them.)
    default_input_size = (3, 224, 224)  # (C, H, W); subclasses set `in_chans` (int)
    spatial_dims = 2
    min_input_size = 1  # the smallest side the network takes (valid-padded reductions need more)

    def init_head(self, num_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        self.num_features = num_features
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = GlobalPool("avg")  # adaptive: any input size works (no fixed 7x7 pool)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for `num_classes` (0 removes it)."""
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.fc = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()

    def set_se_impl(self, impl: str) -> ImageClassifier:
        """Run every SE block of this model "fused" (default) or "naive" (`senet.layers.set_se_impl`)."""
        return set_se_impl(self, impl)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def check_input(self, x: Tensor) -> Tensor:
        """x, after raising ShapeError unless it is (N, in_chans, *spatial), sides >= `min_input_size`
        (`check_image_batch`; skipped by torch.jit.trace, which checks the example input)."""
        if torch.jit.is_tracing():
            return x
        return self.check_batch(x)

    def check_batch(self, x: Tensor) -> Tensor:
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

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x).flatten(1)
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
    "AVGPOOL", "BATCHNORM", "CONV", "MAXPOOL", "ImageClassifier", "Stage", "check_image_batch", "init_weights_he",
]  # (the lookups live in layers)
