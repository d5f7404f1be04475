"""Whole-process wall time of the `senet` command against `python -c "import torch"`, before and after a
change, measured alternately in one loop (the machine's load hits every command alike).

    python benchmarks/startup.py --base /path/to/old/checkout [--repeats 5]

Each round runs every command once, in turn: `python -c "import torch"`, then each senet command with the
old source (PYTHONPATH=BASE/src) and with this checkout's. Prints, per command, the median wall time over
the rounds, the spread (min-max), and the median of its ratio to `import torch` in the same round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
COMMANDS = ["--help", "train --help", "info se_resnet50", "models"]


def wall(argv: list[str], src: Path | None) -> float:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="a checkout of the old revision")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sources = {"before": args.base / "src", "after": HERE / "src"}
    times: dict[str, list[float]] = {"import torch": []}
    ratios: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        torch_time = wall([sys.executable, "-c", "import torch"], None)
        times["import torch"].append(torch_time)
        for command in COMMANDS:
            for label, src in sources.items():
                key = f"senet {command} ({label})"
                seconds = wall([sys.executable, "-m", "senet", *command.split()], src)
                times.setdefault(key, []).append(seconds)
                ratios.setdefault(key, []).append(seconds / torch_time)
    print(f"{'command':40s} {'median s':>9s} {'min-max s':>13s} {'x import torch':>15s}")
    for key, values in times.items():
        ratio = f"{statistics.median(ratios[key]):.2f}" if key in ratios else "1"
        print(f"{key:40s} {statistics.median(values):9.2f} {min(values):6.2f}-{max(values):<6.2f} {ratio:>15s}")


if __name__ == "__main__":
    main()
