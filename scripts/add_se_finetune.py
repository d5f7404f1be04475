"""SE added to a trained plain ResNet and fine-tuned: init="identity" against the default (He) init.

    python scripts/add_se_finetune.py [--work runs/add-se] [--epochs 3] [--seeds 0 1]

1. Trains a plain ResNet-20 on the digits (`senet train --model resnet20 --data digits`, the demo recipe), once.
2. For each init and seed, `senet train --pretrained <that run> --add-se INIT --epochs N --lr 0.01` (its SE twin,
   se_resnet20, starting from the plain weights).
3. Prints the validation error of the plain network, of the SE network before any step (the network as
   inserted, evaluated on the same split), after the first epoch and at the end: the table of docs/add-se.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import statistics
from pathlib import Path

import torch

import senet
from senet.cli import main
from senet.models import se_twin
from senet.weights.checkpoint import load_weights, save_weights


def run(argv: list[str]) -> None:
    if main(argv) != 0:
        raise SystemExit(f"failed: senet {' '.join(argv)}")


def errors(folder: Path) -> list[float]:
    return [json.loads(line)["val_top1_err"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def error_at_insertion(plain: Path, init: str, work: Path) -> float:
    """The SE network as `--add-se INIT` builds it, before any step, on the digits' val split."""
    _, record = load_weights(plain / "model.safetensors")
    model = senet.load_model(plain / "model.safetensors")
    torch.manual_seed(0)
    senet.add_se(model, init=init, input_size=(record.channels, record.input_size, record.input_size))
    path = work / f"inserted-{init}.safetensors"
    path.unlink(missing_ok=True)
    save_weights(path, model.state_dict(), dataclasses.replace(record, model=se_twin(record.model)))
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        run(["eval", "--checkpoint", str(path), "--data", "digits", "--workers", "0", "--json"])
    return json.loads(buffer.getvalue())["top1_err"]


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/add-se"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    plain = args.work / "plain"
    if not (plain / "model.safetensors").exists():
        run(["train", "--model", "resnet20", "--data", "digits", "--output", str(plain), "--quiet"])
    rows = [("plain ResNet-20 (pretrained)", [errors(plain)[-1]], [float("nan")], [float("nan")])]
    for init in ("identity", "default"):
        inserted = error_at_insertion(plain, init, args.work)
        first, final = [], []
        for seed in args.seeds:
            out = args.work / f"{init}-seed{seed}"
            if not (out / "model.safetensors").exists():
                run(["train", "--pretrained", str(plain / "model.safetensors"), "--add-se", init, "--data", "digits",
                     "--epochs", str(args.epochs), "--lr", "0.01", "--seed", str(seed), "--output", str(out),
                     "--overwrite", "--quiet"])
            history = errors(out)
            first.append(history[0])
            final.append(history[-1])
        rows.append((f"+ SE, init={init}", [inserted], first, final))

    def cell(values: list[float]) -> str:
        if values[0] != values[0]:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.2f}"
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    print(f"| network | val error at insertion (%) | after epoch 1 (%) | after epoch {args.epochs} (%) |")
    print("|---|---|---|---|")
    for name, inserted, first, final in rows:
        print(f"| {name} | {cell(inserted)} | {cell(first)} | {cell(final)} |")
    print(f"(median (min-max) over seeds {args.seeds}; digits val split, {args.epochs} fine-tuning epochs at lr 0.01)")


if __name__ == "__main__":
    main_()
