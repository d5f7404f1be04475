"""Where the fused merge pays: a residual unit's tail (its last BN and the SE merge, forward and backward)
at the tensor shapes of the demo's SE-ResNet-20 and of SE-ResNet-50, fused against the formula and the
plain tail (BN, add, ReLU), timed alternately in one process (median of per-round times, ms; fused/formula
the median of per-round ratios). `senet.layers.merge.FUSE_MIN_ELEMENTS` is set from this.

    python benchmarks/merge_sizes.py --threads 1
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import torch
from torch import Tensor, nn

from senet.bench import environment, provenance_line
from senet.layers import SEConfig, SEResidualUnit

merge_module = importlib.import_module("senet.layers.merge")
SHAPES = [(64, 16, 16, 16), (64, 32, 8, 8), (64, 64, 4, 4), (8, 256, 56, 56), (8, 1024, 14, 14), (8, 2048, 7, 7)]


class Tail(SEResidualUnit):
    """A unit's last BN and its merge: relu(SE(bn(c)) + shortcut)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn, self.act = nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        self.init_se(SEConfig(), in_channels=channels, mid_channels=channels, out_channels=channels)

    def forward(self, c: Tensor, shortcut: Tensor) -> Tensor:
        return self.se_merge(c, shortcut, self.act, norm=self.bn)


class PlainTail(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn, self.act = nn.BatchNorm2d(channels), nn.ReLU(inplace=True)

    def forward(self, c: Tensor, shortcut: Tensor) -> Tensor:
        return self.act(self.bn(c) + shortcut)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=40, help="rounds at batch 64 (a quarter of them at batch 8)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    merge_module.FUSE_MIN_ELEMENTS = 0  # each shape both ways
    print(provenance_line(environment()))
    print("\n| shape | plain ms | fused ms | formula ms | fused/formula |\n|---|---|---|---|---|")
    for shape in SHAPES:
        c0, skip0 = torch.randn(shape), torch.randn(shape)
        subjects = {"plain": (PlainTail(shape[1]), True), "fused": (Tail(shape[1]), True), "formula": (Tail(shape[1]), False)}
        times: dict[str, list[float]] = {k: [] for k in subjects}
        for _ in range(args.rounds if shape[0] == 64 else max(3, args.rounds // 4)):
            for name, (module, fused) in subjects.items():
                merge_module.FUSE_MIN_ELEMENTS = 0 if fused else c0.numel() + 1
                c, skip = c0.clone().requires_grad_(), skip0.clone().requires_grad_()
                start = time.perf_counter()
                module(c, skip).sum().backward()
                times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v[2:]) * 1e3 for k, v in times.items()}
        ratio = statistics.median(a / b for a, b in zip(times["fused"][2:], times["formula"][2:]))
        print(f"| {shape} | {med['plain']:.2f} | {med['fused']:.2f} | {med['formula']:.2f} | {ratio:.3f} |", flush=True)


if __name__ == "__main__":
    main()
