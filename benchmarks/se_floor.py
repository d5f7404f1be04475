"""How far below today's SE cost eager PyTorch can go: SE/plain of the shipped block against reference
blocks that do only part of SE's work, all in one process, step by step interleaved.

Each reference replaces every SE block's excitation s (on that model instance only; the unit's merge
still writes skip + x * s) by part of Eq. 3:

- ``scale``: s a constant (N, C, 1, 1) tensor: the scale's full-size forward pass and the one of its
  backward (dL/dx = g * s), nothing else;
- ``scale+ds``: s a leaf that takes a gradient: adds dL/ds = sum over space of g * x;
- ``squeeze+scale``: s = sigmoid(mean(x) over space), the gradient through the squeeze too: every
  full-size pass of SE with none of the excitation's FCs and ReLU;
- ``se``: the block as shipped (`SqueezeExcitation.excitation`; the merge in `senet.layers.merge`).

The gap between ``squeeze+scale`` and ``se`` is the excitation's operations on (N, C) vectors, whose cost
is their number (each a dispatch, slower inside a training step than alone: caches hold the convolutions'
data); the gap between plain and ``squeeze+scale`` is full-size passes that any SE on PyTorch operations
makes. docs/speed.md has the figures.

    python benchmarks/se_floor.py --threads 2                     # the demo's step (SE-ResNet-20, 64 x 1 x 16 x 16)
    python benchmarks/se_floor.py --threads 1 --rounds 5
    python benchmarks/se_floor.py --compile
    python benchmarks/se_floor.py --model se_mobilenet_v1 --baseline mobilenet_v1 --batch 8 --input-size 224 --in-chans 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import types
from collections.abc import Callable

import torch
from torch import Tensor

from senet.allocator import keep_freed_memory
from senet.bench import BenchConfig, Subject, environment, provenance_line
from senet.layers import SqueezeExcitation


def _scale(block: SqueezeExcitation, x: Tensor) -> Tensor:
    return torch.full(x.shape[:2] + (1,) * (x.dim() - 2), 0.5, dtype=x.dtype)


def _scale_ds(block: SqueezeExcitation, x: Tensor) -> Tensor:
    return torch.full(x.shape[:2] + (1,) * (x.dim() - 2), 0.5, dtype=x.dtype, requires_grad=torch.is_grad_enabled())


def _squeeze_scale(block: SqueezeExcitation, x: Tensor) -> Tensor:
    z = x.sum(tuple(range(2, x.dim()))) / math.prod(x.shape[2:])  # the block's own squeeze
    return torch.sigmoid(z).view(z.shape + (1,) * (x.dim() - 2))  # (a gate keeps s in (0, 1): no denormals)


REFERENCES: dict[str, Callable[[SqueezeExcitation, Tensor], Tensor] | None] = {
    "scale": _scale, "scale+ds": _scale_ds, "squeeze+scale": _squeeze_scale, "se": None,
}


def make_step(name: str, args: argparse.Namespace, excitation: Callable | None) -> Callable[[], None]:
    """`senet bench`'s step of `name` (its batch, SGD and loss), each SE block's excitation replaced."""
    config = BenchConfig(model=name, mode=args.mode, batch=args.batch, input_size=args.input_size,
                         compile=args.compile, model_kwargs={"in_chans": args.in_chans})
    subject = Subject(name, config.model_kwargs, config.se_impl, config)
    if excitation is not None:  # (before the first step: torch.compile traces the replaced method)
        for block in subject.model.modules():
            if isinstance(block, SqueezeExcitation):
                block.excitation = types.MethodType(excitation, block)
    return subject.step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="se_resnet20")
    parser.add_argument("--baseline", default="resnet20")
    parser.add_argument("--mode", default="train", choices=("train", "infer"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=16)
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each network per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile every network (Inductor's loops)")
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)

    steps = {"plain": make_step(args.baseline, args, None)}
    steps.update({label: make_step(args.model, args, excitation) for label, excitation in REFERENCES.items()})
    for step in steps.values():
        for _ in range(3):
            step()
    ratios: dict[str, list[float]] = {label: [] for label in steps}
    plain_ms: list[float] = []
    labels = list(steps)
    for _ in range(args.rounds):
        times: dict[str, list[float]] = {label: [] for label in steps}
        for i in range(args.steps):  # one step of each, in alternating order
            for label in labels if i % 2 == 0 else labels[::-1]:
                start = time.perf_counter()
                steps[label]()
                times[label].append(time.perf_counter() - start)
        medians = {label: statistics.median(t) for label, t in times.items()}
        plain_ms.append(1e3 * medians["plain"])
        for label in steps:
            ratios[label].append(medians[label] / medians["plain"])

    print(provenance_line(environment()))
    print(f"\n{args.model} against {args.baseline}, {args.mode}{', compiled' if args.compile else ''}, batch {args.batch}, {args.in_chans} x {args.input_size} x "
          f"{args.input_size}, {args.threads} threads; {args.rounds} rounds of {args.steps} interleaved steps, "
          f"plain step {statistics.median(plain_ms):.1f} ms; median [min, max] of the rounds' ratios\n")
    print("| SE blocks replaced by | /plain |\n|---|---|")
    for label in list(REFERENCES):
        values = ratios[label]
        print(f"| {label} | {statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
