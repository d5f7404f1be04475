"""docs/img/excitation-*.png: the excitation figure (`senet analyze excitation`, Fig. 6) for the 16 SE blocks of
SE-ResNet-50 and 10 classes, from synthetic statistics shaped like the paper's (class-agnostic early blocks,
class-specific late ones, saturated conv5 blocks), to show the figure's layout.

    python scripts/plot_excitation_example.py docs/img/excitation-after.png
"""

from __future__ import annotations

import sys

import torch

import senet
from senet.analysis.excitation import ExcitationStats, paper_block_name, plot_excitations, se_block_paths


def synthetic_stats() -> ExcitationStats:
    generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        model = senet.create_model("se_resnet50")
    widths = {name: block.channels for name, block in
              ((paper_block_name(path), model.get_submodule(path)) for path in se_block_paths(model).values())}
    per_class = {}
    for depth, (name, channels) in enumerate(widths.items()):
        base = torch.rand(channels, generator=generator) * 0.5 + 0.25
        spread = 0.02 + 0.25 * (depth / (len(widths) - 1)) ** 2  # class dependence grows with depth
        values = base + spread * torch.randn(10, channels, generator=generator)
        if depth >= 14:  # conv5 blocks saturate
            values = 0.9 + 0.1 * torch.rand(10, channels, generator=generator)
        per_class[name] = values.clamp(0, 1)
    return ExcitationStats(per_class, torch.full((10,), 36), [str(i) for i in range(10)])


if __name__ == "__main__":
    print(plot_excitations(synthetic_stats(), sys.argv[1], title="se_resnet50 on digits"))
