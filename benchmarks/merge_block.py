"""What SE's merge costs on its own: one training step (forward and backward; `--mode infer`: one
forward pass in eval mode) of a residual unit's tail, the last BN and the merge, with and without SE (paper Sec. 3.2, Eq. 4; Sec. 4 on SE's cost).

A whole network's step is dominated by convolutions (84% of a ResNet-50 step on a CPU), which SE does not
touch and which make its cost hard to see in the noise. Here the subjects are the units' tails alone:

- plain:           relu(bn(c) + shortcut)                                   (ResNet)
- SE fast:         relu(bn(c) * s + shortcut), senet's path: the fused merge and its kernels in eager
                   mode; under torch.compile the BN folded into the merge (`folded_batch_norm`)
- SE formula:      the same formula written plainly (`set_se_impl(unit, "naive")`): x.mean, the FCs, x * s, +, ReLU

Each is timed eagerly and compiled, alternately in one process, on the conv2_x output shape of
ResNet-50 (256 channels, 56x56); reported: the median step and SE's extra time over plain.

    python benchmarks/merge_block.py                     # CPU, fp32, batch 8, 2 threads
    python benchmarks/merge_block.py --device cuda       # batch 256, bf16 autocast, channels_last
    python benchmarks/merge_block.py --mode infer        # eval mode, no autograd
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch import Tensor, nn

from senet.allocator import keep_freed_memory
from senet.bench import environment, provenance_line
from senet.layers import SEConfig, SEResidualUnit, set_se_impl


class UnitTail(SEResidualUnit):
    """A residual unit's last BN and its merge: act(SE(bn(c)) + shortcut)."""

    def __init__(self, channels: int, se: SEConfig | None) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)
        self.init_se(se, in_channels=channels, mid_channels=channels, out_channels=channels)

    def forward(self, c: Tensor, shortcut: Tensor) -> Tensor:
        return self.se_merge(c, shortcut, self.act, norm=self.bn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, help="default: 8 on cpu, 256 on cuda")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--mode", default="train", choices=["train", "infer"])
    args = parser.parse_args()
    keep_freed_memory()  # as senet's commands (senet.allocator; SENET_MALLOC=system opts out)
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is visible; run on a GPU machine or use --device cpu")
    if not gpu:
        torch.set_num_threads(args.threads)
    batch = args.batch or (256 if gpu else 8)
    shape = (batch, args.channels, args.size, args.size)
    fmt = torch.channels_last if gpu else torch.contiguous_format
    torch.manual_seed(0)
    c0 = torch.randn(shape, device=args.device).contiguous(memory_format=fmt)
    shortcut0 = torch.randn(shape, device=args.device).contiguous(memory_format=fmt)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else contextlib.nullcontext()
    if gpu:
        c0, shortcut0 = c0.bfloat16(), shortcut0.bfloat16()

    def subject(se: bool, fast: bool, compiled: bool):
        unit = UnitTail(args.channels, SEConfig() if se else None).to(args.device).to(memory_format=fmt)
        set_se_impl(unit, "fused" if fast else "naive")
        unit.train(args.mode == "train")
        run = torch.compile(unit) if compiled else unit
        grad = torch.randn(shape, device=args.device, dtype=c0.dtype).contiguous(memory_format=fmt)

        if args.mode == "infer":
            def infer() -> None:
                with torch.no_grad(), amp:
                    run(c0, shortcut0)

            return infer

        def step() -> None:
            c, shortcut = c0.clone().requires_grad_(), shortcut0.clone().requires_grad_()
            with amp:
                out = run(c, shortcut)
            out.backward(grad)

        return step

    execs = ["eager"] if args.no_compile else ["eager", "compiled"]
    subjects = {}
    for exec_ in execs:
        for name, se, fast in (("plain", False, True), ("SE fast", True, True), ("SE formula", True, False)):
            subjects[(exec_, name)] = subject(se, fast, exec_ == "compiled")
    for step in subjects.values():
        for _ in range(args.warmup):
            step()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in subjects}
    for r in range(args.repeats):
        for key in list(subjects)[:: 1 if r % 2 == 0 else -1]:
            if gpu:
                torch.cuda.synchronize()
            start = time.perf_counter()
            subjects[key]()
            if gpu:
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
    print(provenance_line(environment(device=args.device)) + "\n")
    what = "training step" if args.mode == "train" else "inference (eval mode)"
    print(f"unit tail (BN + merge), {what}, input {shape}, {args.device}"
          f"{', bf16 autocast, channels_last' if gpu else f', fp32, {args.threads} threads'}, "
          f"median of {args.repeats} after {args.warmup} warm-up steps\n")
    print("| exec | subject | ms per step | extra over plain (ms) | ratio to plain |")
    print("|---|---|---|---|---|")
    for exec_ in execs:
        plain = statistics.median(times[(exec_, "plain")]) * 1e3
        for name in ("plain", "SE fast", "SE formula"):
            ms = statistics.median(times[(exec_, name)]) * 1e3
            print(f"| {exec_} | {name} | {ms:.2f} | {ms - plain:+.2f} | {ms / plain:.3f} |")


if __name__ == "__main__":
    main()
