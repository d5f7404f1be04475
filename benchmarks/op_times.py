"""The excitation's operations timed one by one, inside a training step of the demo's network and alone.

Each SE block's forward is replaced (on that model instance) by the same operations as
`SqueezeExcitation.excitation`'s eager path, each timed with `time.perf_counter`: the squeeze
(`global_pool`: a sum over space divided by the area), fc1 (`F.linear` on the weights viewed as a matrix),
its ReLU, fc2, the gate and the gates' view to (N, C, 1, 1), plus the scale x * s. "in a step": during SGD steps of the whole network; "alone": the same
block's operations on the same shapes in a loop of their own; "alone, caches swept": with a 16 MB
tensor made and summed between the calls, as the convolutions between two SE blocks do to the caches.

    python benchmarks/op_times.py --threads 2
"""

from __future__ import annotations

import argparse
import collections
import time
import types

import torch
import torch.nn.functional as F
from torch import Tensor

from senet.allocator import keep_freed_memory
from senet.bench import BenchConfig, Subject, environment, provenance_line
from senet.layers import SqueezeExcitation
from senet.layers.squeeze_excite import global_pool

OPS = ("squeeze", "fc1", "act", "fc2", "gate", "view", "scale")


def timed_forward(totals: dict[str, float]):
    """A forward for an SE block that runs the shipped path's operations, adding each one's seconds to `totals`."""

    def forward(block: SqueezeExcitation, x: Tensor) -> Tensor:
        clock = time.perf_counter
        t0 = clock()
        z = global_pool(x, block.squeeze_mode)
        t1 = clock()
        h = F.linear(z, block.fc1.weight.flatten(1), block.fc1.bias)
        t2 = clock()
        h = block.act(h)
        t3 = clock()
        a = F.linear(h, block.fc2.weight.flatten(1), block.fc2.bias)
        t4 = clock()
        s = block.gate(a)
        t5 = clock()
        s = s[(...,) + (None,) * block.dims]
        t6 = clock()
        y = x * s
        t7 = clock()
        for name, (start, end) in zip(OPS, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6), (t6, t7))):
            totals[name] += end - start
        return y

    return forward


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)

    config = BenchConfig(model="se_resnet20", mode="train", batch=64, input_size=16, model_kwargs={"in_chans": 1})
    subject = Subject(config.model, config.model_kwargs, config.se_impl, config)  # `senet bench`'s step
    blocks = [m for m in subject.model.modules() if isinstance(m, SqueezeExcitation)]
    in_step: dict[str, float] = collections.defaultdict(float)
    for block in blocks:
        block.forward = types.MethodType(timed_forward(in_step), block)
    shapes = {}

    def record_shape(block: SqueezeExcitation, args: tuple[Tensor, ...]) -> None:
        shapes[block] = args[0].shape

    hooks = [b.register_forward_pre_hook(record_shape) for b in blocks]
    for step in range(3 + args.steps):
        if step == 3:
            in_step.clear()
        subject.step()
    for hook in hooks:
        hook.remove()

    def alone(sweep: bool) -> dict[str, float]:
        totals: dict[str, float] = collections.defaultdict(float)
        forward = timed_forward(totals)
        data = {b: torch.randn(shapes[b], requires_grad=True) for b in blocks}
        for step in range(3 + args.steps):
            if step == 3:
                totals.clear()
            for block in blocks:
                if sweep:
                    torch.randn(4_000_000).sum()
                forward(block, data[block] * 1.0)
        return totals

    rows = {"in a step": in_step, "alone": alone(False), "alone, caches swept": alone(True)}
    print(provenance_line(environment()))
    print(f"\nSE-ResNet-20, batch 64, 1 x 16 x 16, {args.threads} threads: microseconds per operation and SE block "
          f"(forward, gradients on), mean over {args.steps} steps x {len(blocks)} blocks\n")
    print("| | " + " | ".join(OPS) + " | all |\n|---|" + "---|" * (len(OPS) + 1))
    for label, totals in rows.items():
        per = {op: 1e6 * totals[op] / (args.steps * len(blocks)) for op in OPS}
        print(f"| {label} | " + " | ".join(f"{per[op]:.1f}" for op in OPS) + f" | {sum(per.values()):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
