"""SE's cost on two revisions of senet, measured in one run: processes of the two alternate, A B B A ...

Each process is one `senet bench` measurement (an SE model against its plain twin, timed alternately
in that process) on one revision's source tree, so every figure of a round was measured minutes apart
under the same load. Prints, per row, the SE/plain ratio of each revision (median and spread over the
rounds) and the new/old ratio of the SE model's own step time.

    git worktree add --detach ../base <old commit>
    python benchmarks/compare_revisions.py --old ../base --new . --rounds 3
    python benchmarks/compare_revisions.py --old ../base --new . --rows train-compiled infer-compiled --rounds 1
    python benchmarks/compare_revisions.py --old ../base --model se_resnet20 --baseline resnet20 \
        --rows train-eager --batch 64 --input-size 16 --in-chans 1 --threads 1 --repeats 30   (the demo's step)
    python benchmarks/compare_revisions.py --old ../base --baseline se_resnet50 --baseline-se-impl naive --memory
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from senet import allocator
from senet.bench import environment, provenance_line, source_commit

# The child: run one bench row with whichever harness the revision has (senet.bench, or the older
# senet.analysis.benchmark), print its JSON.
CHILD = """
import json, sys
try:
    from senet.bench import BenchConfig, run_bench
except ImportError:
    from senet.analysis.benchmark import BenchConfig, run_bench
kwargs = json.loads(sys.argv[1])
print(json.dumps(run_bench(BenchConfig(**kwargs)).as_dict()))
"""

ROWS = {  # name: BenchConfig keywords besides the model pair
    "infer-eager": dict(mode="infer"),
    "train-eager": dict(mode="train"),
    "infer-compiled": dict(mode="infer", compile=True),
    "train-compiled": dict(mode="train", compile=True),
}


def run_row(tree: Path, config: dict, python: str, malloc: str = "kept") -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_NUM_THREADS=str(config.get("threads") or 2))
    env.pop("SENET_MALLOC", None)
    env.pop("GLIBC_TUNABLES", None)
    if malloc == "kept":  # as senet's commands keep it, for both revisions alike
        env["GLIBC_TUNABLES"] = allocator.TUNABLES
    done = subprocess.run([python, "-c", CHILD, json.dumps(config)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"compare_revisions.py: the run on {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="source tree of the old revision (has src/senet)")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--model", default="se_resnet50")
    parser.add_argument("--baseline", default="resnet50")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=["infer-eager", "train-eager"])
    parser.add_argument("--rounds", type=int, default=3, help="processes per revision and row")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8, help="timed rounds inside each process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--input-size", type=int, help="input side in pixels (default: the model's own)")
    parser.add_argument("--in-chans", type=int, help="input channels of both models (default: their own)")
    parser.add_argument("--se-impl", default="fused", help="SE implementation of the model")
    parser.add_argument("--baseline-se-impl", help="SE implementation of the baseline (default: --se-impl)")
    parser.add_argument("--memory", action="store_true", help="also measure training memory (peak and saved bytes)")
    parser.add_argument("--output", type=Path, help="also write the Markdown summary here")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--malloc", choices=("kept", "system"), default="kept",
                        help="glibc malloc of both revisions' processes: freed memory kept (as senet's commands) or as it comes")
    args = parser.parse_args(argv)

    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    results: dict[str, dict[str, list[dict]]] = {row: {"old": [], "new": []} for row in args.rows}
    for index in range(args.rounds):
        for row in args.rows:
            config = dict(model=args.model, baseline=args.baseline, batch=args.batch, threads=args.threads,
                          repeats=args.repeats, warmup=args.warmup, memory=args.memory, input_size=args.input_size,
                          se_impl=args.se_impl, baseline_se_impl=args.baseline_se_impl, **ROWS[row])
            if args.in_chans is not None:
                config["model_kwargs"] = {"in_chans": args.in_chans}
            order = ("old", "new") if index % 2 == 0 else ("new", "old")
            for label in order:
                result = run_row(trees[label], config, args.python, args.malloc)
                results[row][label].append(result)
                print(f"round {index + 1} {row} {label}: ratio {result['ratio']:.3f}, {args.model} "
                      f"{result['model_ms']:.1f} ms, {args.baseline} {result['baseline_ms']:.1f} ms", flush=True)

    # The machine's line, naming both revisions' commits; the child processes ran with --threads threads.
    env = environment() | {"commit": f"old {source_commit(trees['old'])}, new {source_commit(trees['new'])}",
                           "threads": args.threads}
    lines = [
        provenance_line(env),
        "",
        f"{args.model} ({args.se_impl}) vs {args.baseline}, batch {args.batch}, input {args.input_size or 'default'}, "
        f"{args.threads} threads, {args.repeats} timed rounds "
        f"per process, {args.rounds} processes per revision and row, alternating (median [min, max] over them)",
        "",
        "| row | SE/plain old | SE/plain new | new/old SE model time | new/old plain model time |",
        "|---|---|---|---|---|",
    ]
    for row in args.rows:
        old, new = results[row]["old"], results[row]["new"]
        se_ratio = [n["model_ms"] / o["model_ms"] for o, n in zip(old, new)]
        plain_ratio = [n["baseline_ms"] / o["baseline_ms"] for o, n in zip(old, new)]
        memory = ""
        if args.memory and row.startswith("train"):
            memory = f" memory {spread([r['memory_ratio'] for r in old])} -> {spread([r['memory_ratio'] for r in new])}"
        lines.append(f"| {row} | {spread([r['ratio'] for r in old])} | {spread([r['ratio'] for r in new])} "
                     f"| {spread(se_ratio)} | {spread(plain_ratio)} |{memory}")
    summary = "\n".join(lines)
    print(summary)
    if args.output:
        args.output.write_text(summary + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
