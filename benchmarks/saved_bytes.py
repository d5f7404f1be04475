"""Bytes autograd keeps for one training step's backward: an SE model with the fused merge, the same model
with the merge as the formula everywhere (`FUSE_MIN_ELEMENTS` raised), and its plain twin. Byte counts do
not depend on the machine's load.

    python benchmarks/saved_bytes.py --model se_resnet50 --baseline resnet50 --batch 8
"""

from __future__ import annotations

import argparse
import importlib

import torch

from senet.bench import saved_storages
from senet.models import create_model

merge_module = importlib.import_module("senet.layers.merge")


def saved_mb(name: str, batch: int, size: int) -> float:
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.randn(batch, 3, size, size)
    return sum(saved_storages(lambda: model(x)).values()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="se_resnet50")
    parser.add_argument("--baseline", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args()
    fused = saved_mb(args.model, args.batch, args.input_size)
    threshold, merge_module.FUSE_MIN_ELEMENTS = merge_module.FUSE_MIN_ELEMENTS, 2**62
    formula = saved_mb(args.model, args.batch, args.input_size)
    merge_module.FUSE_MIN_ELEMENTS = threshold
    plain = saved_mb(args.baseline, args.batch, args.input_size)
    print(f"saved MB: {args.model} fused {fused:.1f}, formula {formula:.1f}; {args.baseline} {plain:.1f}; "
          f"fused/formula {fused / formula:.3f}, fused/plain {fused / plain:.3f}, formula/plain {formula / plain:.3f}")


if __name__ == "__main__":
    main()
