"""Page faults and time per CPU training step, SE-ResNet-50 against ResNet-50, with glibc's malloc as it
comes and with freed memory kept (`senet.allocator.keep_freed_memory`, what senet's commands do).

Each setting runs in fresh processes (malloc's state is per process), the two settings alternating;
inside a process the two networks take turns, step by step. Minor page faults come from `getrusage`,
split at the end of the forward pass.

    python benchmarks/page_faults.py --processes 3 --steps 6      # fp32, batch 8, 224x224, 2 threads
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MODELS = ("se_resnet50", "resnet50")


def measure(steps: int, batch: int, size: int, threads: int) -> dict[str, list[list[float]]]:
    """In this process: per model, [forward faults, backward faults, forward ms, backward ms] per step."""
    import torch
    import torch.nn.functional as F

    import senet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,))
    nets = {}
    for name in MODELS:
        model = senet.create_model(name)
        nets[name] = model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step(name: str) -> list[float]:
        model, optimizer = nets[name]
        faults0, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        faults1, middle = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        faults2, end = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        return [faults1 - faults0, faults2 - faults1, 1e3 * (middle - start), 1e3 * (end - middle)]

    for _ in range(2):  # warm-up
        for name in MODELS:
            step(name)
    rows: dict[str, list[list[float]]] = {name: [] for name in MODELS}
    for index in range(steps):
        for name in MODELS if index % 2 == 0 else MODELS[::-1]:
            rows[name].append(step(name))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3, help="processes per setting")
    parser.add_argument("--steps", type=int, default=6, help="measured steps per network and process")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=("system", "kept"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "kept":
            from senet.allocator import keep_freed_memory

            assert keep_freed_memory(), "glibc's mallopt is not available here"
        print(json.dumps(measure(args.steps, args.batch, args.size, args.threads)))
        return

    settings = ("system", "kept")
    rows: dict[str, dict[str, list[list[float]]]] = {s: {name: [] for name in MODELS} for s in settings}
    ratios: dict[str, list[float]] = {s: [] for s in settings}
    for index in range(args.processes):
        for setting in settings if index % 2 == 0 else settings[::-1]:
            command = [sys.executable, __file__, "--child", setting, "--steps", str(args.steps),
                       "--batch", str(args.batch), "--size", str(args.size), "--threads", str(args.threads)]
            env = {key: value for key, value in os.environ.items() if key not in ("SENET_MALLOC", "GLIBC_TUNABLES")}
            result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout)
            for name in MODELS:
                rows[setting][name] += result[name]
            se, plain = result[MODELS[0]], result[MODELS[1]]
            ratios[setting] += [(a[2] + a[3]) / (b[2] + b[3]) for a, b in zip(se, plain)]
            print(f"process {index + 1} ({setting}) done", file=sys.stderr)
    from senet.bench import environment, provenance_line  # (not in the children: they import torch themselves)

    print(provenance_line(environment() | {"threads": args.threads}) + "\n")  # the children's threads
    print(f"batch {args.batch}, {args.size}x{args.size}, {args.threads} threads; medians over "
          f"{args.processes} processes x {args.steps} steps per setting and network\n")
    print("| malloc | network | faults, forward | faults, backward | ms, forward | ms, backward | SE/plain step (per-step pairs) |")
    print("|---|---|---|---|---|---|---|")
    for setting in settings:
        for name in MODELS:
            columns = list(zip(*rows[setting][name]))
            cells = [f"{statistics.median(c):.0f}" for c in columns]
            ordered = sorted(ratios[setting])
            ratio = (f"{statistics.median(ordered):.3f} [{ordered[len(ordered) // 4]:.3f}, "
                     f"{ordered[3 * len(ordered) // 4]:.3f}]") if name == MODELS[0] else ""
            print(f"| {setting} | {name} | {' | '.join(cells)} | {ratio} |")


if __name__ == "__main__":
    main()
