"""The eager CPU training step with each unit's tail as one autograd node against the same network with
the tail as three (the moments, the excitation, the `senet::se_merge` op), and the plain ResNet-50.

Three subjects in one process, one training step each per round, the order rotated every round, so load
from other processes hits all three alike: A = SE-ResNet-50 as senet runs it (`_UnitTail`), B = the same
network with `merge._one_node` answering False (the op path, as on a GPU), P = ResNet-50. Prints median
and minimum step times and the per-round ratios A/B, A/P and B/P (median and interquartile range).

    python benchmarks/one_node_tail.py --rounds 15          # fp32, batch 8, 224x224, 2 threads
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import torch
import torch.nn.functional as F

import senet
from senet.allocator import keep_freed_memory
from senet.bench import environment, provenance_line

merge_module = importlib.import_module("senet.layers.merge")
ORDERS = ("ABP", "PBA", "BAP", "PAB", "APB", "BPA")


def quartiles(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(values):.3f} [{ordered[len(values) // 4]:.3f}, {ordered[3 * len(values) // 4]:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()  # as senet's commands (senet.allocator; SENET_MALLOC=system opts out)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    one_node = merge_module._one_node
    use_one_node = {"on": True}
    merge_module._one_node = lambda *a, **k: use_one_node["on"] and one_node(*a, **k)

    def subject(name: str, one: bool):
        model = senet.create_model(name)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        return model, optimizer, one

    subjects = {"A": subject("se_resnet50", True), "B": subject("se_resnet50", False), "P": subject("resnet50", True)}
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.batch,))

    def step(key: str) -> float:
        model, optimizer, one = subjects[key]
        use_one_node["on"] = one
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    for _ in range(2):  # warm-up
        for key in subjects:
            step(key)
    times: dict[str, list[float]] = {key: [] for key in subjects}
    for index in range(args.rounds):
        for key in ORDERS[index % len(ORDERS)]:
            times[key].append(step(key))
    print(provenance_line(environment()))
    for key, label in (("A", "SE-ResNet-50, one node"), ("B", "SE-ResNet-50, the op"), ("P", "ResNet-50")):
        print(f"{key} {label:24s} median {statistics.median(times[key]) * 1e3:7.1f} ms, min {min(times[key]) * 1e3:7.1f} ms")
    ratio = lambda a, b: [p / q for p, q in zip(times[a], times[b])]  # noqa: E731
    print(f"A/B {quartiles(ratio('A', 'B'))}   A/P {quartiles(ratio('A', 'P'))}   B/P {quartiles(ratio('B', 'P'))}")


if __name__ == "__main__":
    main()
