"""The role of excitation (paper Sec. 7.2, Figs. 6-7): mean excitation per class at every SE block.

Forward hooks on each SE block's gate collect the excitation s (N, C, 1, 1) it computes; averaging over
the images of each class gives the per-class channel profiles the paper plots. Early blocks are
expected to be class-agnostic and later ones class-specific, the last ones saturating near 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from senet.layers import SqueezeExcitation, se_impl


def paper_block_name(module_path: str) -> str:
    """`layer2.3.se` -> `SE_3_4` (stage conv3_x, block 4), the paper's naming; other paths are kept."""
    match = re.fullmatch(r"layer(\d+)\.(\d+)\.se", module_path)
    if match is None:
        return module_path
    return f"SE_{int(match.group(1)) + 1}_{int(match.group(2)) + 1}"


def se_blocks(model: nn.Module) -> dict[str, SqueezeExcitation]:
    """Every SE block of `model` by its paper name (SE_stage_block for ResNet-style models), in network order."""
    return {paper_block_name(name): module for name, module in model.named_modules() if isinstance(module, SqueezeExcitation)}


@dataclass
class ExcitationStats:
    """Per-class mean excitation at each SE block: `per_class[block]` is (num_classes, C); `counts` (num_classes,)."""

    per_class: dict[str, Tensor]
    counts: Tensor
    classes: list[str]

    @property
    def blocks(self) -> list[str]:
        return list(self.per_class)

    def mean(self, block: str) -> Tensor:
        """Mean excitation over all images, (C,)."""
        weights = self.counts.to(self.per_class[block].dtype)
        return (self.per_class[block] * weights[:, None]).sum(0) / weights.sum().clamp_min(1)

    def class_specificity(self, block: str) -> float:
        """Mean over channels of the standard deviation across classes: near 0 for class-agnostic blocks."""
        present = self.counts > 0
        return float(self.per_class[block][present].std(0, unbiased=False).mean())


@torch.no_grad()
def collect_excitations(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    *,
    classes: list[str] | None = None,
    max_images: int | None = None,
) -> ExcitationStats:
    """Run `model` in eval mode over (images, labels) batches and average each SE block's excitation per class.

    `max_images` stops after that many images. Excitations with spatial extent (squeeze="none") are
    averaged over positions first.
    """
    blocks = se_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no SE blocks to collect excitations from")
    sums: dict[str, Tensor] = {}
    counts = torch.zeros(num_classes, dtype=torch.float64)
    captured: dict[str, Tensor] = {}

    def hook(name: str):
        def capture(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            captured[name] = output.detach().flatten(2).mean(2).double().cpu()  # (N, C)

        return capture

    handles = [block.gate.register_forward_hook(hook(name)) for name, block in blocks.items()]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for images, labels in batches:
            if max_images is not None and seen >= max_images:
                break
            if max_images is not None:
                images, labels = images[: max_images - seen], labels[: max_images - seen]
            captured.clear()
            with se_impl(model, "naive"):  # the gates called as modules on (N, C, 1, 1), so the hooks fire
                model(images)
            labels_cpu = labels.cpu()
            for name, values in captured.items():
                if name not in sums:
                    sums[name] = torch.zeros(num_classes, values.shape[1], dtype=torch.float64)
                sums[name].index_add_(0, labels_cpu, values)
            counts += torch.bincount(labels_cpu, minlength=num_classes).double()
            seen += len(labels)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    per_class = {name: (sums[name] / counts.clamp_min(1)[:, None]).float() for name in blocks if name in sums}
    return ExcitationStats(per_class, counts.long(), classes or [str(i) for i in range(num_classes)])
