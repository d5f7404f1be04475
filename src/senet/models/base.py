"""What every senet model shares: the classifier API, He initialisation and input checks.

API (as timm): `forward_features(x)` -> feature map, `forward_head(x, pre_logits=False)` -> logits,
`reset_classifier(num_classes)`, and the attributes `num_classes`, `in_chans`, `num_features`,
`default_input_size` (C, H, W).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from senet.layers import BATCHNORM, CONV, MAXPOOL, GlobalPool, ShapeError, set_se_impl
from senet.layers.nd import AVGPOOL, BATCHNORMS, CONVS


class ImageClassifier(nn.Module):
    """Base class: a feature extractor followed by global pooling, dropout and a linear classifier."""

    # (No class-level annotations: under `from __future__ import annotations` TorchScript cannot read them.)
    default_input_size = (3, 224, 224)  # (C, H, W); subclasses set `in_chans` (int)
    spatial_dims = 2

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

    def check_input(self, x: Tensor) -> None:
        """Raise ShapeError unless x is (N, in_chans, *spatial)."""
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            return
        name = type(self).__name__
        if x.dim() != self.spatial_dims + 2:
            raise ShapeError(
                f"{name} expects a {self.spatial_dims + 2}-D batch (N, C, "
                f"{', '.join('HWD'[: self.spatial_dims]) if self.spatial_dims > 1 else 'L'}), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_chans:
            raise ShapeError(
                f"{name} expects {self.in_chans} input channels, got {x.shape[1]} (input shape "
                f"{tuple(x.shape)}); build the model with in_chans={x.shape[1]} or convert the input"
            )

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


__all__ = ["AVGPOOL", "BATCHNORM", "CONV", "MAXPOOL", "ImageClassifier", "init_weights_he"]  # (the lookups live in layers)
