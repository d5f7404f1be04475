"""Training throughput (images/s) of SE networks against their plain twins: forward, backward, SGD step.

    python benchmarks/train_throughput.py                       # CPU: *resnet20 at 32, *resnet50 at 224
    python benchmarks/train_throughput.py --device cuda --amp bf16 --channels-last --pairs se_resnet50:224

The model runs on pre-normalised batches already on the device (the data loader is measured by
loader_throughput.py). The two networks of a pair alternate, round after round, so that a change in
machine load hits both; each reports the median over rounds of the best steps, and the ratio of the
medians is the cost of SE. A shared machine makes absolute numbers noisy; the ratio is steadier.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from senet import create_model, plain_twin
from senet.allocator import keep_freed_memory
from senet.bench import environment, provenance_line
from senet.engine.evaluate import autocast


def step_time(model, optimizer, images, labels, device, amp: str, steps: int) -> float:
    """Seconds per training step, the minimum over `steps` steps (after one untimed step)."""
    best = float("inf")
    for index in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(device, amp):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index:
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["se_resnet20:32", "se_resnet50:224"], help="SE_MODEL:INPUT_SIZE")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (the best one counts)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    keep_freed_memory()  # as senet's commands (senet.allocator; SENET_MALLOC=system opts out)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(provenance_line(environment(device=device.type)))
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, amp {args.amp}, "
          f"channels_last {args.channels_last}")
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    for pair in args.pairs:
        se_name, size = pair.split(":")
        size = int(size)
        names = [se_name, plain_twin(se_name)]
        setups = {}
        for name in names:
            torch.manual_seed(0)
            model = create_model(name).to(device, memory_format=memory_format).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            images = torch.randn(args.batch_size, 3, size, size, device=device).contiguous(memory_format=memory_format)
            labels = torch.randint(0, model.num_classes, (args.batch_size,), device=device)
            setups[name] = (model, optimizer, images, labels)
        times: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                times[name].append(step_time(*setups[name], device, args.amp, args.steps))
        rates = {name: args.batch_size / statistics.median(times[name]) for name in names}
        for name in names:
            print(f"  {name:14s} {size:4d}px  {rates[name]:8.1f} images/s  (step {statistics.median(times[name]) * 1e3:7.1f} ms)")
        print(f"  SE costs {100 * (rates[names[1]] / rates[names[0]] - 1):+.1f}% training time ({names[0]} / {names[1]})")


if __name__ == "__main__":
    main()
